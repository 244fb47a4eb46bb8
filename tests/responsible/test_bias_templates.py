"""The audit's templates and lexicons: the shipped files load, user files extend them, and every
mistake in a user file names the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.errors import UserError
from lmforge.responsible.bias_templates import (
    MinimalPair,
    PromptPair,
    load_lexicons,
    load_templates,
)


def write_lines(path: Path, *entries: object) -> Path:
    path.write_text(
        "".join(
            (e if isinstance(e, str) else json.dumps(e, ensure_ascii=False)) + "\n" for e in entries
        ),
        encoding="utf-8",
    )
    return path


def test_shipped_templates_cover_both_languages_and_differ_in_one_term() -> None:
    templates = load_templates()
    assert {p.lang for p in templates.pairs} == {"en", "zh"} == {p.lang for p in templates.prompts}
    assert {p.category for p in templates.pairs} >= {"gender", "age"}
    assert len({p.id for p in templates.pairs}) == len(templates.pairs)
    for pair in templates.pairs:
        assert pair.stereotyped != pair.anti_stereotyped
    zh = load_templates(languages=["zh"])
    assert zh.pairs and all(p.lang == "zh" for p in zh.pairs + zh.prompts)
    lexicons = load_lexicons()
    assert set(lexicons) == {"en", "zh"}
    assert {"career", "family", "positive", "negative"} <= set(lexicons["zh"])


def test_a_user_file_adds_templates(tmp_path: Path) -> None:
    user = write_lines(
        tmp_path / "mine.jsonl",
        {
            "kind": "pair",
            "category": "age",
            "lang": "en",
            "template": "The {term} forgot.",
            "stereotyped": "old man",
            "anti_stereotyped": "young man",
        },
        "",
        {
            "kind": "generation",
            "id": "g1",
            "category": "gender",
            "lang": "zh",
            "template": "{term}的工作是",
            "groups": {"female": "她", "male": "他"},
        },
    )
    only = load_templates(user, builtin=False)
    assert only.pairs == [
        MinimalPair(f"{user}:1", "age", "en", "The old man forgot.", "The young man forgot.")
    ]
    assert only.prompts == [
        PromptPair("g1", "gender", "zh", ("female", "male"), ("她的工作是", "他的工作是"))
    ]
    both = load_templates(user)
    assert len(both.pairs) == len(load_templates().pairs) + 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"mine.jsonl:2: not valid JSON"),
        ('["a list"]', r"mine.jsonl:2: expected a JSON object, got list"),
        ({"kind": "triple"}, r"mine.jsonl:2: 'kind' must be one of: pair, generation"),
        (
            {
                "kind": "pair",
                "category": "gender",
                "lang": "en",
                "template": "{term} x",
                "stereotyped": "She",
                "anti": "He",
            },
            r"mine.jsonl:2: unknown key 'anti' for kind pair \(valid keys: anti_stereotyped",
        ),
        (
            {
                "kind": "pair",
                "category": "gender",
                "lang": "fr",
                "template": "{term} x",
                "stereotyped": "Elle",
                "anti_stereotyped": "Il",
            },
            r"mine.jsonl:2: lang 'fr' is not one of: en, zh",
        ),
        (
            {
                "kind": "pair",
                "category": "gender",
                "lang": "en",
                "template": "She is x",
                "stereotyped": "She",
                "anti_stereotyped": "He",
            },
            r"mine.jsonl:2: the template has no \{term\} slot",
        ),
        (
            {
                "kind": "generation",
                "category": "gender",
                "lang": "en",
                "template": "{term} is",
                "groups": {"female": "She"},
            },
            r"mine.jsonl:2: 'groups' must map exactly two group names",
        ),
    ],
)
def test_mistakes_name_the_file_and_line(tmp_path: Path, line: object, message: str) -> None:
    good = {
        "kind": "pair",
        "category": "gender",
        "lang": "en",
        "template": "{term} ran.",
        "stereotyped": "He",
        "anti_stereotyped": "She",
    }
    user = write_lines(tmp_path / "mine.jsonl", good, line)
    with pytest.raises(UserError, match=message):
        load_templates(user, builtin=False)


def test_missing_files_and_languages(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope.jsonl does not exist"):
        load_templates(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match=r"--lang 'fr' is not one of: en, zh"):
        load_templates(languages=["fr"])
    bad = tmp_path / "lex.json"
    bad.write_text('{"en": {"career": "doctor"}}', encoding="utf-8")
    with pytest.raises(UserError, match=r"lex.json: en.career must be a list of non-empty strings"):
        load_lexicons(bad)
    bad.write_text('{"en": {\n"career": [}}', encoding="utf-8")
    with pytest.raises(UserError, match=r"lex.json:2: not valid JSON"):
        load_lexicons(bad)


def test_user_lexicon_words_are_added(tmp_path: Path) -> None:
    user = tmp_path / "lex.json"
    user.write_text(
        json.dumps({"en": {"career": ["Astronaut"], "tech": ["robot"]}}), encoding="utf-8"
    )
    lexicons = load_lexicons(user)
    assert "astronaut" in lexicons["en"]["career"] and "engineer" in lexicons["en"]["career"]
    assert load_lexicons(user, builtin=False) == {
        "en": {"career": frozenset({"astronaut"}), "tech": frozenset({"robot"})}
    }
