"""Fonts for plot labels: matplotlib's own DejaVu Sans, plus a CJK font found on the system.

matplotlib ships no font with Chinese, Japanese or Korean glyphs, so such labels would come out
as empty boxes. :func:`label_fonts` looks for one: the file in ``LMFORGE_CJK_FONT``, else a
font matplotlib already knows (well-known CJK families first), else any system font file that
matplotlib has not indexed yet (one installed after its font cache was built). A font counts
only if its character map really has the probe characters. Plots then use matplotlib's
per-glyph font fallback (``font.family`` as a list, matplotlib >= 3.6), and any character no
chosen font has is written as a ``\\uXXXX`` escape instead of a box, with one warning naming
the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from matplotlib import font_manager
from matplotlib.ft2font import FT2Font

from lmforge.errors import UserError

CJK_FONT_ENV = "LMFORGE_CJK_FONT"
BASE_FAMILY = "DejaVu Sans"  # bundled with matplotlib, so always there
CJK_PROBE = "中文字"
# Families that have CJK glyphs, most common first: tried before scanning every font.
KNOWN_CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Hiragino Sans GB",
    "Heiti SC",
    "Arial Unicode MS",
)
INSTALL_HINT = (
    "install one with `bash scripts/install-fonts.sh` (run by `make install`; it installs "
    f"fonts-wqy-microhei), or set {CJK_FONT_ENV}=/path/to/a/font.ttf"
)


@dataclass(frozen=True)
class LabelFonts:
    """The font families plots use, and every character they can draw."""

    families: tuple[str, ...]  # matplotlib font.family: the first with a glyph draws it
    charmap: frozenset[int]
    cjk_family: str | None

    def rc(self) -> dict[str, list[str]]:
        """rcParams for ``matplotlib.rc_context``."""
        return {"font.family": list(self.families)}

    def drawable(self, text: str) -> str:
        """``text`` with every character no font has written as a ``\\uXXXX`` escape."""
        return "".join(c if ord(c) in self.charmap or c.isspace() else _escape(c) for c in text)

    def missing(self, texts: list[str]) -> str:
        """The distinct characters of ``texts`` no font has (empty: all drawable)."""
        seen = dict.fromkeys(c for t in texts for c in t if ord(c) not in self.charmap)
        return "".join(c for c in seen if not c.isspace())


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _glyphs(path: str) -> dict[int, int]:
    """The font's character map: code point -> glyph index ({} for an unreadable file)."""
    try:
        return FT2Font(path).get_charmap()
    except (OSError, RuntimeError, ValueError):
        return {}


def _charmap(path: str) -> frozenset[int]:
    return frozenset(_glyphs(path))


def _has_cjk(path: str) -> bool:
    """Whether the font draws the probe characters, each with its own glyph. (matplotlib
    bundles "Last Resort", which maps every code point to a few placeholder boxes.)"""
    glyphs = _glyphs(path)
    ids = [glyphs.get(ord(c)) for c in CJK_PROBE]
    return None not in ids and len(set(ids)) == len(ids)


def _family_of(path: str) -> str:
    """Register a font file with matplotlib and return its family name."""
    font_manager.fontManager.addfont(path)
    return font_manager.ttfFontProperty(FT2Font(path)).name


def find_cjk_font() -> tuple[str, str] | None:
    """(family, file) of a font with CJK glyphs, or None when the system has none."""
    configured = os.environ.get(CJK_FONT_ENV, "").strip()
    if configured:
        if not Path(configured).is_file():
            raise UserError(f"{CJK_FONT_ENV}={configured}: no such font file")
        return _family_of(configured), configured
    known = font_manager.fontManager.ttflist
    rank = {name: i for i, name in enumerate(KNOWN_CJK_FAMILIES)}
    ordered = sorted(known, key=lambda entry: rank.get(entry.name, len(rank)))
    checked: set[str] = set()
    for entry in ordered:
        if entry.fname not in checked:
            checked.add(entry.fname)
            if _has_cjk(entry.fname):
                return entry.name, entry.fname
    # fonts installed after matplotlib built its cache are not in ttflist yet
    for path in sorted(font_manager.findSystemFonts(fontext="ttf")):
        if path not in checked and _has_cjk(path):
            return _family_of(path), path
    return None


@lru_cache(maxsize=4)
def _label_fonts(configured: str) -> LabelFonts:
    base_path = font_manager.findfont(BASE_FAMILY, fallback_to_default=True)
    charmap = _charmap(base_path)
    found = find_cjk_font()
    if found is None:
        return LabelFonts((BASE_FAMILY,), charmap, None)
    family, path = found
    return LabelFonts((BASE_FAMILY, family), charmap | _charmap(path), family)


def label_fonts() -> LabelFonts:
    """The fonts for plot labels (looked up once per process and ``LMFORGE_CJK_FONT`` value)."""
    return _label_fonts(os.environ.get(CJK_FONT_ENV, "").strip())


def missing_glyphs_warning(texts: list[str], fonts: LabelFonts | None = None) -> str | None:
    """One line for the user when some label characters have no font, else None."""
    fonts = fonts or label_fonts()
    missing = fonts.missing(texts)
    if not missing:
        return None
    shown = missing[:8] + ("..." if len(missing) > 8 else "")
    return (
        f"no installed font has glyphs for {shown!r}: labels show them as \\uXXXX escapes; "
        f"for Chinese, Japanese and Korean {INSTALL_HINT}"
    )
