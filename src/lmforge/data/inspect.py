"""Look at a task dataset before training on it: size, lengths, truncation, examples."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmforge.config import DataSource
from lmforge.data.loading import load_source
from lmforge.data.templates import to_pairs
from lmforge.errors import UserError

# A tokenizer-free length: each CJK character is one unit (Chinese and Japanese have no
# spaces), any other run of non-space characters is one word. An estimate, said as such; a
# regex because no library counts this way (sacrebleu's zh tokenizer also splits punctuation).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
WORD_UNIT = "words (whitespace-separated; each CJK character counts as one)"


def count_words(text: str) -> int:
    """Whitespace words plus CJK characters: a length estimate without a tokenizer."""
    return len(_WORD.findall(text))


@dataclass(frozen=True)
class LengthStats:
    min: int
    mean: float
    median: float
    p95: float
    max: int

    @classmethod
    def of(cls, lengths: np.ndarray) -> LengthStats:
        return cls(
            min=int(lengths.min()),
            mean=float(lengths.mean()),
            median=float(np.median(lengths)),
            p95=float(np.percentile(lengths, 95)),
            max=int(lengths.max()),
        )


@dataclass(frozen=True)
class DataReport:
    """What ``lmforge data inspect`` shows about one source."""

    path: str
    task: str
    rows: int
    unit: str  # what a length counts: tokens of a tokenizer, or words
    source: LengthStats
    target: LengthStats
    max_length: int | None
    truncated_source: int  # examples whose source is longer than max_length
    truncated_target: int
    truncated: int  # examples with either side longer than max_length
    examples: list[tuple[str, str]]


def _token_counter(tokenizer_dir: str | Path) -> Callable[[list[str]], list[int]]:
    from transformers import AutoTokenizer

    path = Path(tokenizer_dir)
    if not path.is_dir():
        raise UserError(f"tokenizer directory {path} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a tokenizer from {path}: {exc}") from None

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]]

    return count


def inspect_source(
    source: DataSource,
    *,
    tokenizer: str | Path | None = None,
    max_length: int | None = None,
    show: int = 3,
) -> DataReport:
    """Load and render ``source``; measure source and target lengths of every example."""
    if tokenizer is not None:
        count, unit = _token_counter(tokenizer), f"tokens ({tokenizer})"
    else:
        count, unit = (lambda texts: [count_words(t) for t in texts]), WORD_UNIT
    pairs = to_pairs(load_source(source), source)
    source_lengths: list[int] = []
    target_lengths: list[int] = []
    for batch in pairs.select_columns(["source", "target"]).iter(batch_size=1000):
        source_lengths += count(batch["source"])
        target_lengths += count(batch["target"])
    src, tgt = np.array(source_lengths), np.array(target_lengths)
    limit = max_length if max_length is not None else np.inf
    return DataReport(
        path=source.path,
        task=source.task,
        rows=len(pairs),
        unit=unit,
        source=LengthStats.of(src),
        target=LengthStats.of(tgt),
        max_length=max_length,
        truncated_source=int((src > limit).sum()),
        truncated_target=int((tgt > limit).sum()),
        truncated=int(((src > limit) | (tgt > limit)).sum()),
        examples=list(zip(pairs[:show]["source"], pairs[:show]["target"], strict=True)),
    )
