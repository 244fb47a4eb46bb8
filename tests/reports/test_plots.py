"""Plots: valid PNGs of the promised pixel size; heatmap frames that show their own matrix."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from lmforge.reports.plots import (
    DPI,
    FIGSIZE,
    heatmap_layout,
    loss_points,
    plot_loss_curves,
    plot_metric_bars,
    write_heatmaps,
)

SIZE = (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))  # (height, width) of a PNG

ROWS = [
    {"event": "train", "step": 2, "loss": 4.0},
    {"event": "train", "step": 4, "loss": 3.0},
    {"event": "eval", "step": 4, "eval_loss": 3.5, "eval_ppl": 33.1},
    {"event": "train", "step": 6, "loss": 2.5},
    {"event": "eval", "step": 6, "eval_loss": 3.2},
]


def test_loss_points_split_train_and_eval():
    assert loss_points(ROWS) == ([(2, 4.0), (4, 3.0), (6, 2.5)], [(4, 3.5), (6, 3.2)])


def test_loss_curves_of_several_runs(tmp_path):
    path = plot_loss_curves(
        {"pretrain": ROWS, "微调": ROWS[:3]}, tmp_path / "loss.png", title="Loss 损失"
    )
    image = imread(path)
    assert image.shape[:2] == SIZE
    assert image.std() > 0.01  # something was drawn
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_metric_bars_group_systems_by_metric(tmp_path):
    table = {"base": {"bleu": 12.5, "rouge": 30.1}, "tuned": {"bleu": 20.0, "chrf": 41.0}}
    path = plot_metric_bars(table, tmp_path / "bars.png", title="scores")
    assert imread(path).shape[:2] == SIZE


def test_heatmaps_share_one_layout_and_show_their_own_cells(tmp_path):
    rows, cols = ["a", "b", "c"], ["x", "y", "大", "</s>"]
    zeros, ones = np.zeros((3, 4)), np.ones((3, 4))
    written = write_heatmaps(
        [(tmp_path / "zeros.png", zeros, "all zero"), (tmp_path / "ones.png", ones, "all one")],
        rows,
        cols,
        row_title="query",
        col_title="key",
    )
    (width, height), _ = heatmap_layout(3, 4)
    dark, bright = (imread(p) for p in written)
    assert dark.shape[:2] == bright.shape[:2] == (round(height * DPI), round(width * DPI))
    changed = np.any(dark != bright, axis=-1)
    # only the cells (and the title) differ: the labels and the colour bar were drawn once
    assert 0.05 < changed.mean() < 0.6
    assert bright[changed].mean() > dark[changed].mean()  # viridis: 1 is bright yellow
    with pytest.raises(ValueError, match="does not match"):
        write_heatmaps(
            [(tmp_path / "bad.png", np.ones((2, 2)), "")], rows, cols, row_title="", col_title=""
        )


def test_heatmap_size_grows_with_tokens_and_stays_bounded():
    small, _ = heatmap_layout(5, 5)
    large, _ = heatmap_layout(50, 50)
    huge, font = heatmap_layout(2000, 2000)
    assert small[0] < large[0] < huge[0] <= 24.0 + 3.0
    assert font >= 3.0
