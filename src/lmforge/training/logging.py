"""Where a run reports progress: metrics.jsonl, TensorBoard and a live rich progress bar.

Only the main process logs. ``metrics.jsonl`` gets one JSON object per event (``"event":
"train"`` every ``log_every`` steps, ``"event": "eval"`` per evaluation); TensorBoard gets the
same numbers as ``train/<name>`` and ``eval/<name>`` scalars. On resume both are cut back to the
checkpoint's step, so a killed run leaves no duplicate or orphaned points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lmforge.fsutil import write_jsonl_atomic

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The events of ``run_dir/metrics.jsonl``; a torn last line (from a kill) is skipped."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Keep only the events up to ``last_step`` (the step a resumed run restarts from)."""
    path = run_dir / METRICS_FILE
    if path.exists():
        write_jsonl_atomic(
            path, [r for r in read_metrics(run_dir) if r.get("step", 0) <= last_step]
        )


def _short(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


class RunLogger:
    """Writes events to metrics.jsonl and TensorBoard and drives the progress bar.

    ``enabled=False`` (every process but the main one) makes every method a no-op.
    """

    def __init__(self, run_dir: Path, *, enabled: bool, start_step: int, max_steps: int) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter  # slow import: main process only

        run_dir.mkdir(parents=True, exist_ok=True)
        # events a killed run wrote after the checkpoint we start from (or before its first
        # checkpoint) are dropped: from metrics.jsonl here, from TensorBoard by purge_step
        truncate_metrics(run_dir, start_step)
        self._metrics = open(run_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._tensorboard = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start_step + 1)
        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn(f"[bold]{escape(run_dir.name)}[/bold] step"),  # the run (or stage) name
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn(
                "loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} tok/s"
            ),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._task = self._progress.add_task(
            "train", total=max_steps, completed=start_step, loss="-", lr="-", speed="-"
        )
        self._progress.start()

    def log(self, event: str, row: dict[str, Any]) -> None:
        """Append one event (``row`` holds ``step``) to metrics.jsonl and TensorBoard."""
        if not self.enabled:
            return
        record = {"event": event, **row}
        self._metrics.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._metrics.flush()
        for name, value in row.items():
            if name == "step" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            tag = f"eval/{name.removeprefix('eval_')}" if event == "eval" else f"{event}/{name}"
            self._tensorboard.add_scalar(tag, value, row["step"])
        self._tensorboard.flush()
        if event == "train":
            self._progress.update(
                self._task,
                loss=_short(row["loss"]),
                lr=f"{row['lr']:.3g}",
                speed=f"{row['tokens_per_s']:,.0f}",
            )
        else:
            shown = "  ".join(
                f"{k} {_short(v)}"
                for k, v in row.items()
                if isinstance(v, float) and k != "elapsed"
            )
            self.console.print(f"step {row['step']}: {shown}")

    def advance(self, step: int) -> None:
        if self.enabled:
            self._progress.update(self._task, completed=step)

    def print(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)

    def close(self) -> None:
        if not self.enabled:
            return
        self._progress.stop()
        self._tensorboard.close()
        self._metrics.close()
