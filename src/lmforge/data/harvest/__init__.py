"""Harvest datasets from knowledge already on this machine, with no download.

Three harvesters, one module each, each importable on its own:

- :mod:`.python`: functions with docstrings from Python source (``ast``, never executed);
- :mod:`.gettext`: source -> translation pairs from gettext ``.po``/``.mo`` catalogs;
- :mod:`.manpages`: one-line NAME summaries paired with DESCRIPTION text from man pages.

Each returns ``(rows, stats)``: ``rows`` is a lazy iterator of dicts (every one with a
``provenance`` field saying where it came from) and ``stats`` a :class:`HarvestStats` that is
complete once ``rows`` is exhausted. :func:`write_harvest` writes rows as JSONL atomically.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import UserError
from lmforge.fsutil import refuse_to_overwrite, write_jsonl_atomic

Row = dict[str, Any]


@dataclass
class HarvestStats:
    """What a harvest found and skipped; filled in while its rows are consumed."""

    sources: list[str] = field(default_factory=list)  # roots searched, in order
    files_scanned: int = 0
    files_skipped: Counter[str] = field(default_factory=Counter)  # reason -> files
    items_skipped: Counter[str] = field(default_factory=Counter)  # reason -> items
    duplicates: int = 0
    rows: int = 0
    seconds: float = 0.0


class Deduplicator:
    """Drops exact repeats of a key (hashed, so memory stays small) and counts them."""

    def __init__(self, stats: HarvestStats) -> None:
        self._seen: set[bytes] = set()
        self._stats = stats

    def is_new(self, *parts: str) -> bool:
        digest = hashlib.blake2b("\0".join(parts).encode("utf-8"), digest_size=16).digest()
        if digest in self._seen:
            self._stats.duplicates += 1
            return False
        self._seen.add(digest)
        return True


def timed(rows: Iterable[Row], stats: HarvestStats) -> Iterator[Row]:
    """Yield ``rows``, counting them into ``stats`` and timing first request to exhaustion."""
    start = time.perf_counter()
    for row in rows:
        stats.rows += 1
        yield row
    stats.seconds = time.perf_counter() - start


def existing_paths(paths: Iterable[str | Path], what: str) -> list[Path]:
    """The user's paths as ``Path``s; a UserError names the first one that does not exist."""
    resolved = [Path(p) for p in paths]
    for path in resolved:
        if not path.exists():
            raise UserError(f"{path} does not exist; name a file or folder of {what}")
    return resolved


def write_harvest(rows: Iterable[Row], out: str | Path, overwrite: bool = False) -> int:
    """Write ``rows`` to ``out`` as JSONL, atomically; returns the row count.

    ``out`` is checked before any row is pulled (harvests are lazy, so a refused ``--out``
    costs nothing). When there are no rows, no file is written and 0 is returned.
    """
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name a .jsonl file")
    refuse_to_overwrite(out, overwrite)
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return 0
    return write_jsonl_atomic(out, itertools.chain([first], iterator))
