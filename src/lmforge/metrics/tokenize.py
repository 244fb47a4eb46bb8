"""CJK-aware word tokenization and script-based language detection for the metrics.

Metrics built for English split on spaces or keep only ``[a-z0-9]``; Chinese and Japanese
have no spaces and no ASCII, so such metrics see one huge token or none at all (rouge-score
scores identical Chinese strings 0). Here each Han or kana character is its own token (or,
with ``cjk="jieba"``, Chinese is cut into words by jieba), and everything else is split into
lowercased runs of letters, marks and digits in any script (Latin with accents, Cyrillic,
Greek, Hangul, Devanagari...). Korean is written with spaces, so Hangul stays in words.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from types import ModuleType

import regex

from lmforge.errors import UserError

CJK_MODES = ("char", "jieba")

_HAN_KANA = r"\p{Han}\p{Hiragana}\p{Katakana}"
# One Han/kana character, or a run of letters/marks/digits that are not Han/kana (V1 allows
# the set difference). Punctuation, symbols and "_" separate tokens, as in rouge-score.
_TOKEN = regex.compile(rf"(?V1)[{_HAN_KANA}]|[[\p{{L}}\p{{M}}\p{{N}}]--[{_HAN_KANA}]]+")
_ALL_HAN = regex.compile(r"\p{Han}+")
# For language detection: single Han, kana or Hangul characters, or runs of other letters.
_CJK_OR_WORD = regex.compile(
    rf"(?V1)[{_HAN_KANA}\p{{Hangul}}]|[[\p{{L}}\p{{N}}]--[{_HAN_KANA}\p{{Hangul}}]]+"
)
_HAN = regex.compile(r"\p{Han}")
_KANA = regex.compile(r"[\p{Hiragana}\p{Katakana}]")
_HANGUL = regex.compile(r"\p{Hangul}")


def tokenize(text: str, cjk: str = "char") -> list[str]:
    """Lowercased word tokens of ``text``; Han/kana characters one token each (``char``) or
    Chinese words cut by jieba (``jieba``). Text is NFKC-normalised first, so full-width
    Latin letters and digits match their ASCII forms."""
    text = unicodedata.normalize("NFKC", text).lower()
    if cjk == "char":
        return _TOKEN.findall(text)
    if cjk == "jieba":
        tokens: list[str] = []
        for piece in _jieba().lcut(text):
            # jieba's Chinese words are kept whole; anything else (Latin runs, punctuation,
            # spaces, kana) goes through the same rules as in "char" mode.
            tokens.extend([piece] if _ALL_HAN.fullmatch(piece) else _TOKEN.findall(piece))
        return tokens
    raise UserError(f"cjk={cjk!r} is not a CJK tokenization; choose one of {', '.join(CJK_MODES)}")


def tokenizer_name(cjk: str = "char") -> str:
    """The tokenizer's name for signatures: ``cjk-char`` or ``cjk-jieba-<version>``."""
    if cjk == "jieba":
        _jieba()
        return f"cjk-jieba-{metadata.version('jieba')}"
    if cjk == "char":
        return "cjk-char"
    raise UserError(f"cjk={cjk!r} is not a CJK tokenization; choose one of {', '.join(CJK_MODES)}")


@cache
def _jieba() -> ModuleType:
    try:
        import jieba
    except ImportError as exc:
        raise UserError(
            "cjk='jieba' needs the jieba package, which is not installed",
            hint="pip install 'lmforge[eval]', or use cjk='char'",
        ) from exc
    jieba.setLogLevel(logging.WARNING)  # it logs "Building prefix dict..." at DEBUG to stderr
    return jieba


def detect_language(texts: str | Iterable[str]) -> str:
    """``zh``, ``ja`` or ``ko`` when CJK characters make up at least half of the text, else
    ``und`` (BCP 47 "undetermined": not CJK; BLEU then uses its default tokenizer).

    A simple script-ratio heuristic: each Han/kana/Hangul character counts as one unit and
    each run of other letters or digits (a word) as one, so Chinese sprinkled with English
    terms is still Chinese. Kana marks Japanese (at least a tenth of the CJK characters), a
    Hangul majority Korean, other CJK Chinese.
    """
    if isinstance(texts, str):
        texts = [texts]
    han = kana = hangul = other = 0
    for text in texts:
        for unit in _CJK_OR_WORD.findall(text):
            if _HAN.fullmatch(unit):
                han += 1
            elif _KANA.fullmatch(unit):
                kana += 1
            elif _HANGUL.fullmatch(unit):
                hangul += 1
            else:
                other += 1
    cjk = han + kana + hangul
    if cjk == 0 or cjk < other:
        return "und"
    if hangul > han + kana:
        return "ko"
    if kana >= 0.1 * cjk:
        return "ja"
    return "zh"
