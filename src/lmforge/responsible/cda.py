"""Counterfactual data augmentation (CDA; Lu et al. 2018, Zmigrod et al. 2019).

Every training row that mentions a listed demographic term gets a copy in which each such
term is swapped for its counterpart, both ways at once ("he" -> "she" and "she" -> "he"), in
every text field of the task template. The model then sees each context with both groups.

Word pairs come from TSV files (``category, language, term, counterpart``): the project's
lists in ``wordlists/`` and a user file in the same format. Matching differs by language:

* ``en``: whole words only, case-insensitive, the case of the original kept (He -> She,
  HIS -> HER). English "her" maps to two words and "his" to two as well; no POS tagger ships
  offline (NLTK's tagger data is a separate download), so a rule decides: ``her`` becomes
  ``his`` when the next word, after spaces only, is a word outside :data:`FUNCTION_WORDS`
  (so probably the noun or adjective a possessive introduces: "her book", "her own car"),
  and ``him`` otherwise (before punctuation, a number, the end, or a function word: "saw her
  yesterday", "gave her the book", "with her."). ``his`` becomes ``her`` by the same test,
  otherwise ``hers`` ("his book" -> "her book", "the book is his." -> "the book is hers.").
* ``zh``: Chinese has no spaces, so terms are found as substrings, the longest listed term
  first at each position. Words whose characters are not the pronoun or the gender word
  (其他 "other", 吉他 "guitar", 妇女 "women") are listed with themselves as counterpart, which
  keeps them whole: 其他 stays 其他 while 他 becomes 她.

Matching is done with ``regex`` alternations (longest alternative first) rather than a
tokenizer: Chinese word segmenters (jieba) miss rare compounds and would be one more model
to load, and whole-word matching needs no more than word boundaries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import datasets
import regex

from lmforge.config import CdaConfig
from lmforge.data.templates import task_fields
from lmforge.errors import UserError

LANGUAGES = ("en", "zh")
CATEGORY = regex.compile(r"[a-z][a-z0-9_]*")

# Words that follow an object pronoun ("gave her the book") or a standalone possessive ("his
# and mine") rather than the noun of a possessive determiner. Closed classes only: articles
# and determiners that cannot follow a possessive, pronouns, prepositions, conjunctions,
# wh-words, auxiliaries and a few adverbs of time and place.
FUNCTION_WORDS = frozenset(
    """
    a an the this that these those some any each all both either neither
    i me you he him she it we us they them my your his her its our their
    mine yours hers ours theirs myself yourself himself herself itself ourselves themselves
    something anything everything nothing someone anyone everyone nobody somebody anybody
    everybody
    to at in on for with from by about of into onto upon over under up down out off away back
    through across along around after before behind below above between beyond during without
    within against toward towards like as than near since until till via per despite except
    among amid
    and or but nor so yet because if when while whereas although though unless whether once
    where why how what who whom which whose then
    is are was were be been being am will would shall should can could may might must has have
    had do does did
    not never always often also too again already still even ever here there now today
    tomorrow yesterday tonight later soon anymore anyway well alone together
    """.split()
)
_NEXT_WORD = regex.compile(r"[ \t]+([\p{L}]+)")
# An English term is a whole word: no letter, digit or "_" of a Latin-like script on either
# side (Han characters do not count, so "他是man" still has the word "man").
_EDGE_BEFORE = r"(?<![[\w]--[\p{Han}]])"
_EDGE_AFTER = r"(?![[\w]--[\p{Han}]])"


@dataclass(frozen=True)
class WordPair:
    """One line of a word-pair file."""

    category: str
    language: str
    term: str
    counterpart: str
    where: str  # file:line


def builtin_lists() -> list[str]:
    """Names of the word-pair lists shipped with lmforge (``gender``...)."""
    folder = resources.files("lmforge.responsible") / "wordlists"
    return sorted(p.name.removesuffix(".tsv") for p in folder.iterdir() if p.name.endswith(".tsv"))


def parse_pairs(text: str, source: str) -> list[WordPair]:
    """Word pairs from TSV text; a bad line is a UserError naming ``source:line``."""
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source}:{number}"
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != 4 or not all(fields):
            raise UserError(
                f"{where}: expected 4 tab-separated fields (category, language, term, "
                f"counterpart), got {len([f for f in fields if f])}"
            )
        category, language, term, counterpart = fields
        if not CATEGORY.fullmatch(category):
            raise UserError(
                f"{where}: category {category!r} must be lowercase letters, e.g. gender"
            )
        if language not in LANGUAGES:
            raise UserError(f"{where}: language {language!r} is not one of: {', '.join(LANGUAGES)}")
        pairs.append(WordPair(category, language, term, counterpart, where))
    return pairs


def read_pairs(path: str | Path) -> list[WordPair]:
    """The word pairs of a user file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"word-pair file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_pairs(text, str(path))


def load_pairs(cfg: CdaConfig) -> list[WordPair]:
    """The pairs ``cfg`` asks for: the user file's first, then the built-in lists', filtered by
    category and language."""
    known = builtin_lists()
    if cfg.user_file and not Path(cfg.user_file).is_file():
        raise UserError(f"augment.cda.user_file: {cfg.user_file} does not exist")
    pairs = read_pairs(cfg.user_file) if cfg.user_file else []
    for name in cfg.lists:
        if name not in known:
            raise UserError(
                f"augment.cda.lists: no built-in word list {name!r} (valid: {', '.join(known)})"
            )
        text = (resources.files("lmforge.responsible") / "wordlists" / f"{name}.tsv").read_text(
            encoding="utf-8"
        )
        pairs += parse_pairs(text, f"lmforge/responsible/wordlists/{name}.tsv")
    if cfg.categories is not None:
        found = {p.category for p in pairs}
        missing = [c for c in cfg.categories if c not in found]
        if missing:
            raise UserError(
                f"augment.cda.categories: no pairs of category {missing[0]!r} "
                f"(the lists have: {', '.join(sorted(found)) or 'none'})"
            )
        pairs = [p for p in pairs if p.category in cfg.categories]
    pairs = [p for p in pairs if p.language in cfg.languages]
    if not pairs:
        raise UserError("augment.cda: no word pairs left for the chosen lists and languages")
    return pairs


def _alternation(terms: Iterable[str]) -> str:
    """Alternatives longest first, so the regex takes the longest term at each position."""
    return "|".join(regex.escape(t) for t in sorted(set(terms), key=lambda t: (-len(t), t)))


def _with_case(original: str, replacement: str) -> str:
    """``replacement`` in the case pattern of ``original``: HE -> SHE, He -> She, he -> she."""
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


class Swapper:
    """Swaps every listed term of a text for its counterpart, in one pass per language."""

    def __init__(self, pairs: Sequence[WordPair]) -> None:
        self.maps: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}
        for pair in pairs:
            table = self.maps[pair.language]
            term, counterpart = pair.term, pair.counterpart
            if pair.language == "en":
                term, counterpart = term.lower(), counterpart.lower()
            table.setdefault(term, counterpart)  # the first pair a term is in decides
            table.setdefault(counterpart, term)
        self.patterns: dict[str, Any] = {}
        if self.maps["en"]:
            body = _alternation(self.maps["en"])
            self.patterns["en"] = regex.compile(
                rf"(?V1){_EDGE_BEFORE}(?:{body}){_EDGE_AFTER}", regex.IGNORECASE
            )
        if self.maps["zh"]:
            self.patterns["zh"] = regex.compile(_alternation(self.maps["zh"]))
        listed = sorted((lang, k, v) for lang, table in self.maps.items() for k, v in table.items())
        self.fingerprint = hashlib.sha256(repr(listed).encode()).hexdigest()[:16]

    def _english(self, match: Any) -> str:
        word = match.group(0)
        lower = word.lower()
        if lower in ("her", "his") and {"her", "his"} <= set(self.maps["en"]):
            after = _NEXT_WORD.match(match.string, match.end())
            before_noun = after is not None and after.group(1).lower() not in FUNCTION_WORDS
            if lower == "her":
                swapped = "his" if before_noun else "him"
            else:
                swapped = "her" if before_noun else "hers"
            return _with_case(word, swapped)
        return _with_case(word, self.maps["en"][lower])

    def swap(self, text: str) -> str:
        """``text`` with every listed term replaced by its counterpart."""
        if "en" in self.patterns:
            text = self.patterns["en"].sub(self._english, text)
        if "zh" in self.patterns:
            text = self.patterns["zh"].sub(lambda m: self.maps["zh"][m.group(0)], text)
        return text


def swapper(cfg: CdaConfig) -> Swapper:
    """The swapper for a run's ``augment.cda`` section."""
    return Swapper(load_pairs(cfg))


def augment(
    rows: datasets.Dataset, task: str, swap: Swapper, fields: Sequence[str] | None = None
) -> datasets.Dataset:
    """``rows`` followed by a counterfactual copy of each row that mentions a listed term.

    ``fields`` are the task's template fields to swap (default: all of them: source and target
    alike); other columns (provenance, paths) are copied unchanged. Deterministic: no sampling.
    """
    valid = task_fields(task).all
    chosen = list(valid if fields is None else fields)
    for field in chosen:
        if field not in valid:
            raise UserError(
                f"augment.cda.fields: {field!r} is not a field of task {task} "
                f"(valid: {', '.join(valid)})"
            )
    chosen = [f for f in chosen if f in rows.column_names]

    def counterfactuals(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        copies: dict[str, list[Any]] = {column: [] for column in batch}
        for i in range(len(batch[chosen[0]]) if chosen else 0):
            swapped = {
                f: swap.swap(batch[f][i]) if isinstance(batch[f][i], str) else batch[f][i]
                for f in chosen
            }
            if any(swapped[f] != batch[f][i] for f in chosen):
                for column in batch:
                    copies[column].append(swapped.get(column, batch[column][i]))
        return copies

    copies = rows.map(
        counterfactuals,
        batched=True,
        desc="counterfactual copies",
        new_fingerprint=f"cda-{rows._fingerprint}-{swap.fingerprint}-{'-'.join(chosen)}",
    )
    return datasets.concatenate_datasets([rows, copies])
