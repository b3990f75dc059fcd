"""Shared response parts."""

from __future__ import annotations

from api.services.as_of import AsOf

__all__ = ["AsOf"]
