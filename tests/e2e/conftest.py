"""Tiny corpora for whole-command tests: synthetic Python functions with docstrings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

OPS = [
    ("add", "+", "Add {k} to the number."),
    ("sub", "-", "Subtract {k} from the number."),
    ("mul", "*", "Multiply the number by {k}."),
    ("div", "/", "Divide the number by {k}."),
]


def synthetic_functions(n_files: int = 12, per_file: int = 10) -> list[dict[str, str]]:
    rows = []
    for f in range(n_files):
        for i in range(per_file):
            name, op, doc = OPS[(f + i) % len(OPS)]
            k = f * per_file + i
            signature = f"def {name}_{k}(x):"
            body = f"return x {op} {k}"
            rows.append(
                {
                    "name": f"{name}_{k}",
                    "signature": signature,
                    "code": f"{signature}\n    {body}",
                    "body": body,
                    "docstring": doc.format(k=k),
                    "summary": doc.format(k=k),
                    "path": f"pkg/module_{f}.py",
                    "provenance": f"python:pkg/module_{f}.py:{i}",
                }
            )
    return rows


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "python.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for row in synthetic_functions():
            handle.write(json.dumps(row) + "\n")
    return path
