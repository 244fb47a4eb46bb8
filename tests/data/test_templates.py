from __future__ import annotations

import datasets
import pytest

from lmforge.config import DataSource, SplitConfig, TemplateConfig
from lmforge.data.templates import TASK_FIELDS, TASKS, render_example, render_source, to_pairs
from lmforge.errors import UserError

DEFAULT = TemplateConfig()

CASES = [
    ("text", {"text": "plain words"}, ("plain words", "")),
    ("summarize", {"document": "long doc", "summary": "short"}, ("summarize: long doc", "short")),
    (
        "translate",
        {"source": "hello", "target": "你好"},
        ("translate English to Chinese: hello", "你好"),
    ),
    (
        "qa",
        {"question": "who?", "context": "Ann came.", "answer": "Ann"},
        ("question: who? context: Ann came.", "Ann"),
    ),
    ("qa", {"question": "who?", "context": None, "answer": "Ann"}, ("question: who?", "Ann")),
    (
        "code-generate",
        {"description": "add two numbers", "signature": "def add(a, b):", "code": "return a + b"},
        ("generate code: add two numbers\ndef add(a, b):", "return a + b"),
    ),
    (
        "code-complete",
        {"prefix": "def f():\n", "completion": "    return 1"},
        ("complete code: def f():\n", "    return 1"),
    ),
    (
        "code-comment",
        {"code": "def f(): pass", "docstring": "Do nothing."},
        ("write a docstring: def f(): pass", "Do nothing."),
    ),
    (
        "write",
        {"prompt": "a poem about rain", "text": "Rain falls."},
        ("write: a poem about rain", "Rain falls."),
    ),
]


@pytest.mark.parametrize(("task", "row", "expected"), CASES)
def test_each_task_renders_source_and_target(task: str, row: dict, expected: tuple) -> None:
    assert render_example(task, row, DEFAULT) == expected
    assert render_source(task, row, DEFAULT) == expected[0]


def test_every_task_has_fields_and_a_case() -> None:
    assert set(TASK_FIELDS) == set(TASKS) == {task for task, _, _ in CASES}
    assert TASK_FIELDS["code-generate"].required == ("description", "code")
    assert TASK_FIELDS["code-generate"].optional == ("signature",)
    assert TASK_FIELDS["text"].target is None


def test_prefix_is_configurable_and_languages_fill_the_default() -> None:
    row = {"source": "hola", "target": "hello"}

    spanish = TemplateConfig(source_lang="Spanish", target_lang="English")
    custom = TemplateConfig(
        prefix="{source_lang}>{target_lang} ", source_lang="es", target_lang="en"
    )

    assert render_source("translate", row, spanish) == "translate Spanish to English: hola"
    assert render_source("translate", row, custom) == "es>en hola"
    assert render_source("summarize", {"document": "d"}, TemplateConfig(prefix="")) == "d"


def test_missing_field_and_unknown_task_are_user_errors() -> None:
    with pytest.raises(UserError, match="task summarize needs the field 'document'"):
        render_source("summarize", {"text": "x"}, DEFAULT)
    with pytest.raises(UserError, match="unknown task 'poem'; valid tasks: text, summarize"):
        render_source("poem", {"text": "x"}, DEFAULT)


def test_to_pairs_renders_a_dataset_and_keeps_provenance_and_group() -> None:
    rows = datasets.Dataset.from_list(
        [
            {"source": "hi", "target": "嗨", "path": "a.po", "provenance": "po", "extra": 1},
            {"source": "bye", "target": "再见", "path": "b.po", "provenance": "po", "extra": 2},
        ]
    )
    source = DataSource(path="x", task="translate", split=SplitConfig(group_by="path"))

    pairs = to_pairs(rows, source)

    assert sorted(pairs.column_names) == ["path", "provenance", "source", "target", "task"]
    assert pairs["source"] == [
        "translate English to Chinese: hi",
        "translate English to Chinese: bye",
    ]
    assert pairs["target"] == ["嗨", "再见"]
    assert pairs["task"] == ["translate", "translate"]
    assert pairs["path"] == ["a.po", "b.po"]
