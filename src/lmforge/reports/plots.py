"""PNG plots for reports: loss curves, grouped metric bars and attention heatmaps.

Figures are ``matplotlib.figure.Figure`` objects drawn by the Agg canvas, never pyplot, so
no global figure state and no display are involved. Every PNG has a fixed size in pixels
(figure inches x ``DPI``, no tight bounding box) and is written atomically. Labels use
:mod:`lmforge.reports.fonts`, so Chinese run names and tokens draw when a CJK font exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave

from lmforge.fsutil import atomic_file
from lmforge.reports.fonts import LabelFonts, label_fonts

DPI = 100
FIGSIZE = (8.0, 4.5)  # loss curves and bar charts: 800 x 450 pixels
HEATMAP_CELL = 0.3  # inches per token on a heatmap axis, while the figure fits MAX_HEATMAP
MAX_HEATMAP = 24.0  # inches: longer inputs get smaller cells and labels
HEATMAP_CMAP = "viridis"
FAST_PNG = {"compress_level": 1}


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=DPI)
    return path


def loss_points(rows: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[int, float]], ...]:
    """(train, eval) (step, loss) points of metrics.jsonl rows (``read_metrics``)."""
    train = [(r["step"], r["loss"]) for r in rows if r.get("event") != "eval" and "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    return train, evals


def plot_loss_curves(
    curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str | None = None
) -> Path:
    """Train (solid) and eval (dashed, dots) loss against step, one colour per run or stage.

    ``curves`` maps a name to metrics.jsonl rows: ``loss`` of train events, ``eval_loss`` of
    eval events."""
    fonts = label_fonts()
    with matplotlib.rc_context(fonts.rc()):
        fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (name, rows) in enumerate(curves.items()):
            color = colors[i % len(colors)]
            prefix = f"{fonts.drawable(name)} " if name else ""
            train, evals = loss_points(rows)
            if train:
                ax.plot(*zip(*train, strict=True), color=color, label=f"{prefix}train")
            if evals:
                steps, losses = zip(*evals, strict=True)
                ax.plot(steps, losses, "o--", color=color, markersize=3, label=f"{prefix}eval")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        if title:
            ax.set_title(fonts.drawable(title))
        return _save(fig, path)


def plot_metric_bars(
    table: Mapping[str, Mapping[str, float]], path: str | Path, title: str | None = None
) -> Path:
    """Grouped bars: one group per metric, one bar (and colour) per system, values on top.

    ``table`` maps a system (model, run) to its scores; a metric a system lacks has no bar."""
    fonts = label_fonts()
    metrics = list(dict.fromkeys(m for scores in table.values() for m in scores))
    with matplotlib.rc_context(fonts.rc()):
        fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        width = 0.8 / max(len(table), 1)
        x = np.arange(len(metrics))
        for i, (system, scores) in enumerate(table.items()):
            values = [scores.get(m, np.nan) for m in metrics]
            offset = (i - (len(table) - 1) / 2) * width
            bars = ax.bar(x + offset, values, width, label=fonts.drawable(system))
            ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
        ax.set_xticks(x, [fonts.drawable(m) for m in metrics])
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        if table:
            ax.legend()
        if title:
            ax.set_title(fonts.drawable(title))
        return _save(fig, path)


# --------------------------------------------------------------------------- heatmaps


def heatmap_layout(rows: int, cols: int) -> tuple[tuple[float, float], float]:
    """((width, height) in inches, label font size) of a heatmap with ``rows`` x ``cols`` cells.

    Sizes are whole pixels at ``DPI``; the margins leave room for labels of ~10 characters."""
    cell = min(HEATMAP_CELL, MAX_HEATMAP / max(rows, cols, 1))
    fontsize = max(3.0, min(8.0, cell * 72 * 0.7))
    width = cols * cell + 2.8  # row labels, colour bar
    height = rows * cell + 2.2  # column labels, title
    return (round(width * DPI) / DPI, round(height * DPI) / DPI), fontsize


def write_heatmaps(
    frames: Sequence[tuple[Path, np.ndarray, str]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    row_title: str,
    col_title: str,
    fonts: LabelFonts | None = None,
) -> list[Path]:
    """Write one PNG heatmap per ``(path, matrix, title)`` frame, all with the same labels.

    Each matrix is (len(row_labels), len(col_labels)) with values in [0, 1] (attention
    weights: one colour scale for every frame, so frames compare). The labels, axes and colour
    bar are laid out and drawn once; each frame then redraws only its cells and title
    (matplotlib blitting), which makes a PNG ~10x cheaper than a full draw: what keeps a
    12-layer x 12-head model's few hundred maps to seconds."""
    fonts = fonts or label_fonts()
    shape = (len(row_labels), len(col_labels))
    (width, height), fontsize = heatmap_layout(*shape)
    with matplotlib.rc_context(fonts.rc()):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        image = ax.imshow(
            np.zeros(shape), vmin=0.0, vmax=1.0, cmap=HEATMAP_CMAP, aspect="auto", animated=True
        )
        ax.set_xticks(range(shape[1]), [fonts.drawable(t) for t in col_labels], rotation=90)
        ax.set_yticks(range(shape[0]), [fonts.drawable(t) for t in row_labels])
        ax.tick_params(labelsize=fontsize, length=2)
        ax.set_xlabel(col_title)
        ax.set_ylabel(row_title)
        fig.colorbar(image, ax=ax, label="attention weight", fraction=0.05, pad=0.02)
        longest = max((title for _, _, title in frames), key=len, default="")
        caption = ax.set_title(longest, animated=True)  # the longest title reserves its space
        canvas.draw()  # lays out and draws everything but the animated cells and title
        fig.set_layout_engine("none")
        background = canvas.copy_from_bbox(fig.bbox)
        written = []
        for path, matrix, title in frames:
            if matrix.shape != shape:
                raise ValueError(f"{path}: matrix {matrix.shape} does not match labels {shape}")
            canvas.restore_region(background)
            image.set_data(matrix)
            caption.set_text(title)
            ax.draw_artist(image)
            ax.draw_artist(caption)
            with atomic_file(path, "wb") as handle:
                # zlib level 1: ~5x faster than the default 6 on these images, ~5% larger
                imsave(handle, np.asarray(canvas.buffer_rgba()), format="png", pil_kwargs=FAST_PNG)
            written.append(Path(path))
    return written
