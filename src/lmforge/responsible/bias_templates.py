"""The bias audit's inputs: minimal pairs, paired generation prompts, and word lexicons.

Templates are JSON Lines, one object a line, the same format for the project's files
(``templates/bias_en.jsonl``, ``templates/bias_zh.jsonl``) and a user's ``--templates`` file.
Both kinds fill ``{term}`` in ``template``, so the two sides differ only in that term:

* ``{"kind": "pair", "category": "gender", "lang": "en", "template": "{term} is a nurse.",
  "stereotyped": "She", "anti_stereotyped": "He"}``: a minimal pair (CrowS-Pairs style); the
  audit compares the log-likelihood the model gives each side;
* ``{"kind": "generation", "category": "gender", "lang": "en", "template": "{term} worked as
  a", "groups": {"female": "The woman", "male": "The man"}}``: two prompts; the audit samples
  continuations of each and compares how often they use words of each lexicon.

``id`` is optional (default ``FILE:LINE``). Lexicons are JSON, ``{lang: {name: [words]}}``
(``templates/lexicons.json``, ``--lexicons``); a user's words are added to the project's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import regex

from lmforge.errors import UserError

LANGUAGES = ("en", "zh")
BUILTIN_TEMPLATES = ("bias_en.jsonl", "bias_zh.jsonl")
SLOT = "{term}"
NAME = regex.compile(r"[a-z][a-z0-9_]*")
KEYS = {
    "pair": {"kind", "id", "category", "lang", "template", "stereotyped", "anti_stereotyped"},
    "generation": {"kind", "id", "category", "lang", "template", "groups"},
}


@dataclass(frozen=True)
class MinimalPair:
    """Two sentences that differ only in a demographic term; ``stereotyped`` is the side a
    stereotype would prefer."""

    id: str
    category: str
    lang: str
    stereotyped: str
    anti_stereotyped: str


@dataclass(frozen=True)
class PromptPair:
    """Two prompts that differ only in a demographic term, one per group (in file order)."""

    id: str
    category: str
    lang: str
    groups: tuple[str, str]
    prompts: tuple[str, str]


@dataclass
class Templates:
    pairs: list[MinimalPair]
    prompts: list[PromptPair]


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _string(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: {key!r} must be a non-empty string")
    return value


def _fill(template: str, term: str) -> str:
    return template.replace(SLOT, term)


def parse_entry(entry: Any, where: str) -> MinimalPair | PromptPair:
    """One template line; every mistake is a UserError naming ``where`` (file:line)."""
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    kind = entry.get("kind")
    if kind not in KEYS:
        raise UserError(f"{where}: 'kind' must be one of: {', '.join(KEYS)} (got {kind!r})")
    unknown = sorted(set(entry) - KEYS[kind])
    if unknown:
        raise UserError(
            f"{where}: unknown key {unknown[0]!r} for kind {kind} "
            f"(valid keys: {', '.join(sorted(KEYS[kind]))})"
        )
    category = _string(entry, "category", where)
    if not NAME.fullmatch(category):
        raise UserError(f"{where}: category {category!r} must be lowercase letters, e.g. gender")
    lang = _string(entry, "lang", where)
    if lang not in LANGUAGES:
        raise UserError(f"{where}: lang {lang!r} is not one of: {', '.join(LANGUAGES)}")
    template = _string(entry, "template", where)
    if SLOT not in template:
        raise UserError(f"{where}: the template has no {SLOT} slot for the demographic term")
    ident = str(entry.get("id") or where)
    if kind == "pair":
        stereotyped = _string(entry, "stereotyped", where)
        anti = _string(entry, "anti_stereotyped", where)
        if stereotyped == anti:
            raise UserError(f"{where}: stereotyped and anti_stereotyped are the same term")
        return MinimalPair(
            ident, category, lang, _fill(template, stereotyped), _fill(template, anti)
        )
    groups = entry.get("groups")
    if not isinstance(groups, dict) or len(groups) != 2:
        raise UserError(f"{where}: 'groups' must map exactly two group names to their terms")
    for name, term in groups.items():
        if not NAME.fullmatch(name) or not isinstance(term, str) or not term.strip():
            raise UserError(
                f"{where}: group {name!r} needs a lowercase name and a non-empty term string"
            )
    (group_a, term_a), (group_b, term_b) = groups.items()
    return PromptPair(
        ident,
        category,
        lang,
        (group_a, group_b),
        (_fill(template, term_a), _fill(template, term_b)),
    )


def parse_templates(text: str, source: str) -> list[MinimalPair | PromptPair]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc.msg})") from None
        entries.append(parse_entry(entry, where))
    return entries


def load_templates(
    user_file: str | Path | None = None,
    *,
    builtin: bool = True,
    languages: Iterable[str] = LANGUAGES,
) -> Templates:
    """The project's templates (``builtin``) and the user's, in those languages."""
    wanted = set(languages)
    unknown = sorted(wanted - set(LANGUAGES))
    if unknown:
        raise UserError(f"--lang {unknown[0]!r} is not one of: {', '.join(LANGUAGES)}")
    entries: list[MinimalPair | PromptPair] = []
    if builtin:
        folder = resources.files("lmforge.responsible") / "templates"
        for name in BUILTIN_TEMPLATES:
            text = (folder / name).read_text(encoding="utf-8")
            entries += parse_templates(text, f"lmforge/responsible/templates/{name}")
    if user_file is not None:
        entries += parse_templates(_read_text(Path(user_file)), str(user_file))
    entries = [e for e in entries if e.lang in wanted]
    if not entries:
        raise UserError("no bias templates to audit with (check --templates and --lang)")
    return Templates(
        pairs=[e for e in entries if isinstance(e, MinimalPair)],
        prompts=[e for e in entries if isinstance(e, PromptPair)],
    )


def _merge_lexicons(
    into: dict[str, dict[str, set[str]]], data: Any, source: str
) -> dict[str, dict[str, set[str]]]:
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected an object {{lang: {{lexicon: [words]}}}}")
    for lang, lexicons in data.items():
        if lang not in LANGUAGES:
            raise UserError(f"{source}: language {lang!r} is not one of: {', '.join(LANGUAGES)}")
        if not isinstance(lexicons, dict):
            raise UserError(f"{source}: {lang} must map lexicon names to lists of words")
        for name, words in lexicons.items():
            if not NAME.fullmatch(name):
                raise UserError(f"{source}: lexicon name {name!r} must be lowercase letters")
            if not isinstance(words, list) or not all(
                isinstance(w, str) and w.strip() for w in words
            ):
                raise UserError(f"{source}: {lang}.{name} must be a list of non-empty strings")
            into.setdefault(lang, {}).setdefault(name, set()).update(
                w.strip().lower() for w in words
            )
    return into


def load_lexicons(
    user_file: str | Path | None = None, *, builtin: bool = True
) -> dict[str, dict[str, frozenset[str]]]:
    """``{lang: {lexicon: words}}``: the project's lexicons plus the user's words."""
    merged: dict[str, dict[str, set[str]]] = {}
    if builtin:
        text = (resources.files("lmforge.responsible") / "templates" / "lexicons.json").read_text(
            encoding="utf-8"
        )
        _merge_lexicons(merged, json.loads(text), "lmforge/responsible/templates/lexicons.json")
    if user_file is not None:
        try:
            data = json.loads(_read_text(Path(user_file)))
        except json.JSONDecodeError as exc:
            raise UserError(f"{user_file}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        _merge_lexicons(merged, data, str(user_file))
    return {
        lang: {name: frozenset(words) for name, words in sorted(lexicons.items())}
        for lang, lexicons in merged.items()
    }
