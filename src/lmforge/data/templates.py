"""Task templates: how one row becomes a (source, target) pair.

The same :func:`render_source` builds the model's input at training, evaluation and serving
time, so a prompt can never drift between them. Each task reads named fields (``TASK_FIELDS``);
a source's ``columns`` mapping has already renamed the user's columns to these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

import datasets

from lmforge.config import DataSource, TaskName, TemplateConfig
from lmforge.errors import UserError

TASKS: tuple[str, ...] = get_args(TaskName)


@dataclass(frozen=True)
class TaskFields:
    """The fields a task reads: required for the source, optional for the source, the target."""

    source: tuple[str, ...]
    optional: tuple[str, ...] = ()
    target: str | None = None  # None: no target (plain text for pretraining)

    @property
    def required(self) -> tuple[str, ...]:
        """Fields every row must have, non-empty: the source fields and the target."""
        return self.source + ((self.target,) if self.target else ())

    @property
    def all(self) -> tuple[str, ...]:
        return self.required + self.optional


TASK_FIELDS: dict[str, TaskFields] = {
    "text": TaskFields(source=("text",)),
    "summarize": TaskFields(source=("document",), target="summary"),
    "translate": TaskFields(source=("source",), target="target"),
    "qa": TaskFields(source=("question",), optional=("context",), target="answer"),
    "code-generate": TaskFields(source=("description",), optional=("signature",), target="code"),
    "code-complete": TaskFields(source=("prefix",), target="completion"),
    "code-comment": TaskFields(source=("code",), target="docstring"),
    "write": TaskFields(source=("prompt",), target="text"),
}

# Default prefixes. ``{source_lang}``/``{target_lang}`` are filled from the TemplateConfig,
# in a user's own prefix too.
DEFAULT_PREFIX: dict[str, str] = {
    "text": "",
    "summarize": "summarize: ",
    "translate": "translate {source_lang} to {target_lang}: ",
    "qa": "question: ",
    "code-generate": "generate code: ",
    "code-complete": "complete code: ",
    "code-comment": "write a docstring: ",
    "write": "write: ",
}


def task_fields(task: str) -> TaskFields:
    """The fields of ``task``; a UserError lists the valid tasks for an unknown one."""
    if task not in TASK_FIELDS:
        raise UserError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return TASK_FIELDS[task]


def prefix_for(task: str, template: TemplateConfig) -> str:
    """The prefix put before every source of ``task`` (the user's, else the task default)."""
    prefix = DEFAULT_PREFIX[task] if template.prefix is None else template.prefix
    return prefix.replace("{source_lang}", template.source_lang).replace(
        "{target_lang}", template.target_lang
    )


def _text(row: dict[str, Any], field: str, task: str) -> str:
    value = row.get(field)
    if value is None:
        raise UserError(f"task {task} needs the field {field!r}; the row has: {', '.join(row)}")
    return value if isinstance(value, str) else str(value)


def _optional(row: dict[str, Any], field: str) -> str:
    value = row.get(field)
    return "" if value is None else str(value).strip()


def render_source(task: str, row: dict[str, Any], template: TemplateConfig) -> str:
    """The model input for one row: the prefix followed by the task's fields."""
    fields = task_fields(task)
    prefix = prefix_for(task, template)
    main = _text(row, fields.source[0], task)
    if task == "qa":
        context = _optional(row, "context")
        return f"{prefix}{main}" + (f" context: {context}" if context else "")
    if task == "code-generate":
        signature = _optional(row, "signature")
        return f"{prefix}{main}" + (f"\n{signature}" if signature else "")
    return prefix + main


def render_example(task: str, row: dict[str, Any], template: TemplateConfig) -> tuple[str, str]:
    """(source, target) for one row; the target is "" for tasks without one (``text``)."""
    target_field = task_fields(task).target
    target = _text(row, target_field, task) if target_field else ""
    return render_source(task, row, template), target


def to_pairs(
    dataset: datasets.Dataset | datasets.IterableDataset, source: DataSource
) -> datasets.Dataset | datasets.IterableDataset:
    """Render every row into columns ``source``, ``target``, ``task``.

    A ``provenance`` column and the split's ``group_by`` column are kept, so splits can keep
    groups together and reports can say where an example came from.
    """
    keep = {"provenance", source.split.group_by} - {None, "source", "target", "task"}
    task, template = source.task, source.template

    def render(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        rows = [
            dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)
        ]
        pairs = [render_example(task, row, template) for row in rows]
        return {
            "source": [s for s, _ in pairs],
            "target": [t for _, t in pairs],
            "task": [task] * len(pairs),
        }

    columns = dataset.column_names or []
    return dataset.map(render, batched=True, remove_columns=[c for c in columns if c not in keep])
