"""`mesh audit` compares every table of every read model: a table added to a read model without saying how it is
compared fails here."""

from __future__ import annotations

import pytest

from api.read_models import READ_MODELS
from projections.audit_comparison import TABLES

pytestmark = pytest.mark.unit


def test_every_read_model_table_is_audited_once_with_a_key():
    audited = [(t.read_model, t.table) for t in TABLES]
    assert sorted(audited) == sorted((m.name, table) for m in READ_MODELS for table in m.tables)
    assert all(t.key for t in TABLES)
