"""The main job on the embedded default: knowledge harvested from this machine.

Stages, each skipped when its output is already in ``out`` (so the same command resumes):
1. harvest Python functions + docstrings (stdlib and site-packages) and, where translation
   catalogs are installed, English -> Chinese (zh_CN) pairs;
2. train a byte-level BPE tokenizer on the harvested code, docstrings and translations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.data.harvest import write_harvest
from lmforge.data.loading import iter_texts
from lmforge.tokenizers import save_tokenizer, train_tokenizer

Report = Callable[[str], None]


@dataclass
class QuickstartResult:
    out: Path
    stages: list[tuple[str, str, float]] = field(default_factory=list)  # (stage, what, seconds)
    python_rows: int = 0
    translation_rows: int = 0
    tokenizer_dir: Path | None = None


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def harvest(out: Path, result: QuickstartResult, report: Report) -> None:
    from lmforge.data.harvest.gettext import harvest_gettext
    from lmforge.data.harvest.python import harvest_python

    data = out / "data"
    python_path = data / "python.jsonl"
    start = time.perf_counter()
    if python_path.is_file():
        result.python_rows = _count_lines(python_path)
        what = f"kept {result.python_rows} functions already in {python_path}"
    else:
        report("harvesting Python functions and docstrings (stdlib and site-packages)...")
        rows, stats = harvest_python()
        result.python_rows = write_harvest(rows, python_path)
        what = f"{result.python_rows} functions from {stats.files_scanned} files -> {python_path}"
    result.stages.append(("harvest python", what, time.perf_counter() - start))
    report(what)

    zh_path = data / "translate-zh.jsonl"
    start = time.perf_counter()
    if zh_path.is_file():
        result.translation_rows = _count_lines(zh_path)
        what = f"kept {result.translation_rows} pairs already in {zh_path}"
    else:
        report("harvesting English -> Chinese pairs from installed translation catalogs...")
        rows, stats = harvest_gettext("zh_CN")
        result.translation_rows = write_harvest(rows, zh_path)
        what = (
            f"{result.translation_rows} pairs from {stats.files_scanned} catalogs -> {zh_path}"
            if result.translation_rows
            else "no zh_CN translation catalogs installed: translation is skipped"
        )
    result.stages.append(("harvest gettext", what, time.perf_counter() - start))
    report(what)


def tokenizer(out: Path, result: QuickstartResult, report: Report, seed: int) -> None:
    directory = out / "tokenizer"
    start = time.perf_counter()
    if (directory / "tokenizer.json").is_file():
        what = f"kept the tokenizer in {directory}"
    else:
        report("training a byte-level BPE tokenizer on code, docstrings and translations...")
        data = out / "data"

        def texts():
            yield from iter_texts(data / "python.jsonl", ["code", "docstring"])
            if (data / "translate-zh.jsonl").is_file():
                yield from iter_texts(data / "translate-zh.jsonl", ["source", "target"])

        trained = train_tokenizer(texts(), kind="bpe", vocab_size=8000, max_texts=60_000, seed=seed)
        save_tokenizer(trained, directory)
        what = f"vocabulary of {len(trained)} tokens -> {directory}"
    result.tokenizer_dir = directory
    result.stages.append(("tokenizer", what, time.perf_counter() - start))
    report(what)


def run_quickstart(
    out: str | Path, *, minutes: float, seed: int, report: Report
) -> QuickstartResult:
    """Run every stage into ``out``; stages already done there are kept."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = QuickstartResult(out)
    harvest(out, result, report)
    tokenizer(out, result, report, seed)
    return result
