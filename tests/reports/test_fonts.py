"""Label fonts: a CJK font when the system has one, escapes and one warning when it has not."""

from __future__ import annotations

import pytest

from lmforge.errors import UserError
from lmforge.reports import fonts


def test_without_a_cjk_font_labels_fall_back_to_escapes(monkeypatch):
    monkeypatch.setattr(fonts, "find_cjk_font", lambda: None)
    fonts._label_fonts.cache_clear()
    try:
        chosen = fonts.label_fonts()
        assert chosen.cjk_family is None
        assert chosen.drawable("大[1/2] ok") == "\\u5927[1/2] ok"
        warning = fonts.missing_glyphs_warning(["大", "家", "go"], chosen)
        assert warning is not None and "'大家'" in warning
        assert "scripts/install-fonts.sh" in warning and fonts.CJK_FONT_ENV in warning
        assert fonts.missing_glyphs_warning(["plain", "text"], chosen) is None
    finally:
        fonts._label_fonts.cache_clear()


def test_an_installed_cjk_font_draws_chinese_labels():
    found = fonts.find_cjk_font()
    if found is None:
        pytest.skip("no CJK font installed (scripts/install-fonts.sh installs one)")
    chosen = fonts.label_fonts()
    assert chosen.cjk_family == found[0] and chosen.families[-1] == found[0]
    assert chosen.drawable("大家早上好") == "大家早上好"
    assert fonts.missing_glyphs_warning(["大家", "go"], chosen) is None


def test_a_configured_font_file_that_is_missing_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv(fonts.CJK_FONT_ENV, str(tmp_path / "none.ttf"))
    with pytest.raises(UserError, match="no such font file"):
        fonts.find_cjk_font()


def test_a_configured_font_file_is_used(monkeypatch):
    found = fonts.find_cjk_font()
    if found is None:
        pytest.skip("no CJK font installed (scripts/install-fonts.sh installs one)")
    monkeypatch.setenv(fonts.CJK_FONT_ENV, found[1])
    assert fonts.find_cjk_font() == found
    assert fonts.label_fonts().cjk_family == found[0]
