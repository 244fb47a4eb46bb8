"""The quickstart's labelled tasks, built from the harvest, and the heuristic baselines.

Every example carries the group it was split by (the Python file, the translation catalog),
and a group's split is fixed by a stable hash of (seed, group) (:func:`split_of`), so no
function and no catalog of the test split is seen in pretraining or fine-tuning.

Tasks (fields as :data:`lmforge.data.templates.TASK_FIELDS` names them):

``code-comment``   code (without its docstring) -> the docstring's summary
``code-generate``  summary + signature -> the body, for short bodies
``code-complete``  up to the last 12 lines of a function -> its next line (stripped)
``translate``      an English message -> its Simplified Chinese (zh_CN) translation

Baselines are heuristics a person could write in a minute, scored on the same examples:
the function name's words as the comment, the most frequent training body as the generated
code (the majority answer), the previous line as the completion, the English source copied as
the translation.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import PurePath
from typing import Any

from lmforge.config import SplitConfig
from lmforge.data.splits import SPLITS, group_fraction

TASKS = ("code-comment", "code-generate", "code-complete", "translate")
# Test data is what the report's numbers rest on; a tenth of the groups keeps it large.
SPLIT = SplitConfig(validation=0.05, test=0.1)
TARGET_FIELD = {
    "code-comment": "docstring",
    "code-generate": "code",
    "code-complete": "completion",
    "translate": "target",
}
MAX_FUNCTION_LINES = 40
MAX_BODY_LINES = 6
PREFIX_LINES = 12
_CJK = re.compile(r"[\u3400-\u9fff]")
_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z]|\d|\b|_)|[A-Z]?[a-z]+|[A-Z]+|\d+")


_LIBRARY_ROOTS = ("site-packages", "dist-packages")
_STDLIB_ROOT = re.compile(r"python\d+(\.\d+)?")


def portable_path(path: str) -> str:
    """A harvested file's path from its library root on: ``site-packages/pkg/mod.py``,
    ``python3.11/os.py``. The split and the site-packages sample hash this, not the absolute
    path, so one seed gives the same split wherever the interpreter or the virtual environment
    is installed (two clones of lmforge on one machine have their own .venv)."""
    parts = PurePath(path).parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in _LIBRARY_ROOTS or _STDLIB_ROOT.fullmatch(parts[i]):
            return "/".join(parts[i:])
    return path


def python_group(row: dict[str, Any]) -> str:
    """The split group of a harvested function: its file, wherever Python is installed."""
    return f"python:{portable_path(row['path'])}"


def split_of(seed: int, group: str) -> str:
    """The split of every example of ``group`` ("train", "validation" or "test")."""
    fraction = group_fraction(seed, group)
    if fraction < SPLIT.test:
        return SPLITS[2]
    if fraction < SPLIT.test + SPLIT.validation:
        return SPLITS[1]
    return SPLITS[0]


def name_words(name: str) -> str:
    """``_Feature.getOptionalRelease`` -> ``get optional release``: the comment baseline."""
    last = name.rsplit(".", 1)[-1]
    return " ".join(word.lower() for word in _WORDS.findall(last))


def _good_summary(summary: str) -> bool:
    words = summary.split()
    return 3 <= len(words) <= 30 and len(summary) <= 200 and summary.isascii()


def comment_example(row: dict[str, Any]) -> dict[str, Any] | None:
    code, summary = row["code"], row["summary"]
    if not _good_summary(summary) or code.count("\n") >= MAX_FUNCTION_LINES:
        return None
    return {"code": code, "docstring": summary, "name": row["name"]}


def generate_example(row: dict[str, Any]) -> dict[str, Any] | None:
    body = row["body"]
    if not _good_summary(row["summary"]) or body.count("\n") >= MAX_BODY_LINES:
        return None
    return {"description": row["summary"], "signature": row["signature"], "code": body}


def complete_example(row: dict[str, Any], seed: int) -> dict[str, Any] | None:
    """One (prefix, next line) pair per function, the line chosen by a hash of the seed."""
    code = row["code"]
    lines = code.split("\n")
    if len(lines) > MAX_FUNCTION_LINES:
        return None
    first_body = row["signature"].count("\n") + 1  # never cut inside the def line(s)
    candidates = [i for i in range(first_body, len(lines)) if len(lines[i].strip()) >= 2]
    if not candidates:
        return None
    index = candidates[int(group_fraction(seed, row["provenance"]) * len(candidates))]
    previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
    return {
        "prefix": "\n".join(lines[max(0, index - PREFIX_LINES) : index]),
        "completion": lines[index].strip(),
        "previous": previous.strip(),
    }


def translate_example(row: dict[str, Any]) -> dict[str, Any] | None:
    source, target = row["source"].strip(), row["target"].strip()
    if not (2 <= len(source) <= 120) or not re.search("[A-Za-z]", source):
        return None
    if not _CJK.search(target):  # untranslated or a copy: nothing to learn
        return None
    return {"source": source, "target": target}


def build_tasks(
    python_rows: Iterable[dict[str, Any]],
    translation_rows: Iterable[dict[str, Any]],
    seed: int,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{task: {split: examples}} with each example's ``group``; duplicates keep the first."""
    tasks: dict[str, dict[str, list[dict[str, Any]]]] = {
        task: {split: [] for split in SPLITS} for task in TASKS
    }
    seen: dict[str, set[tuple[str, ...]]] = {task: set() for task in TASKS}

    def add(task: str, example: dict[str, Any] | None, group: str, key: tuple[str, ...]) -> None:
        if example is None or key in seen[task]:
            return
        seen[task].add(key)
        tasks[task][split_of(seed, group)].append({**example, "group": group})

    for row in python_rows:
        group = python_group(row)
        example = comment_example(row)
        add("code-comment", example, group, (row["code"],))
        example = generate_example(row)
        add("code-generate", example, group, (row["signature"], row["body"]))
        example = complete_example(row, seed)
        add("code-complete", example, group, (row["code"],))
    for row in translation_rows:
        example = translate_example(row)
        add("translate", example, f"gettext:{row['domain']}", (row["source"],))
    return tasks


def pretraining_texts(
    python_rows: Iterable[dict[str, Any]], translation_rows: Iterable[dict[str, Any]], seed: int
) -> Iterator[str]:
    """Unlabelled text of the training groups only: code, docstrings, both sides of messages."""
    for row in python_rows:
        if split_of(seed, python_group(row)) == "train":
            yield row["code"]
            yield row["docstring"]
    for row in translation_rows:
        if split_of(seed, f"gettext:{row['domain']}") == "train":
            yield row["source"]
            yield row["target"]


def baseline_predictions(
    task: str, examples: list[dict[str, Any]], train: Iterable[dict[str, Any]]
) -> list[str]:
    """The heuristic baseline's answer for each example (see the module docstring); ``train``
    is read only by the baselines that need it, so it may be a lazy reader."""
    if task == "code-comment":
        return [name_words(e["name"]) for e in examples]
    if task == "code-complete":
        return [e["previous"] for e in examples]
    if task == "translate":
        return [e["source"] for e in examples]
    if task == "code-generate":
        majority = Counter(e["code"] for e in train).most_common(1)
        return [majority[0][0] if majority else "pass"] * len(examples)
    raise ValueError(f"no baseline for task {task!r}")


BASELINE_NAMES = {
    "code-comment": "function name's words",
    "code-generate": "most frequent training body",
    "code-complete": "previous line repeated",
    "translate": "source copied",
}
