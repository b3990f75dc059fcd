"""The template name's rule as the OpenAPI document states it (domain/template_content.py)."""

from __future__ import annotations

import unicodedata

from domain import template_content
from domain.template_content import _FORBIDDEN_CLASSES, _forbidden_class


def test_the_forbidden_characters_kept_for_this_pythons_unicode_are_the_ones_worked_out():
    worked_out = _forbidden_class()
    assert template_content.NAME_PATTERN == "^\\s*[^{0}\\s][^{0}]*$".format(worked_out)
    assert _FORBIDDEN_CLASSES.get(unicodedata.unidata_version, worked_out) == worked_out
