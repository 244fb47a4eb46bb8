"""Regularization in the training loop: label smoothing reaches the loss, R-Drop's consistency
term (zero without dropout, positive with it, off at alpha 0)."""

from __future__ import annotations

import math
import runpy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lmforge.training.logging import read_metrics
from lmforge.training.loop import doubled, loss_sums, rdrop_kl_sum

TINY_RUN = Path(__file__).parents[1] / "training" / "tiny_run.py"


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    """tiny_run.py's namespace: gpt2(), t5(), bert(), dataset(), Collator, run()."""
    return runpy.run_path(str(TINY_RUN))


def train_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [m for m in read_metrics(run_dir) if m["event"] == "train"]


# --------------------------------------------------------------------------- label smoothing


def test_label_smoothing_on_a_hand_computable_case() -> None:
    # two classes, p = (1/4, 3/4), target 1: plain loss -ln(3/4); smoothed with eps 0.2 it is
    # (1 - eps) * -ln(3/4) + eps * (-ln(1/4) - ln(3/4)) / 2
    outputs = {"logits": torch.tensor([[[0.0, math.log(3.0)]]])}
    batch = {"labels": torch.tensor([[1]])}
    plain, _ = loss_sums(outputs, batch, shift=False, label_smoothing=0.0)
    smoothed, _ = loss_sums(outputs, batch, shift=False, label_smoothing=0.2)
    assert plain.item() == pytest.approx(0.2876821, abs=1e-6)
    assert smoothed.item() == pytest.approx(0.8 * 0.2876821 + 0.1 * (1.3862944 + 0.2876821))
    # the change is eps * (mean over classes of -ln p - (-ln p_target)) = 0.2 * ln(3) / 2
    assert smoothed.item() - plain.item() == pytest.approx(0.1 * math.log(3.0), abs=1e-6)


def test_label_smoothing_reaches_the_training_loss(tiny, tmp_path: Path) -> None:
    """The first logged loss (before any update) is the smoothed loss of the first batch."""
    batches: list[dict[str, torch.Tensor]] = []

    class Recording(tiny["Collator"]):
        def __call__(self, rows):
            batch = super().__call__(rows)
            batches.append({k: v.clone() for k, v in batch.items()})
            return batch

    eps = 0.3
    tiny["run"](
        tmp_path / "run",
        model=tiny["gpt2"](seed=0),
        collator=Recording(),
        max_steps=1,
        optim={"label_smoothing": eps},
    )
    logged = train_rows(tmp_path / "run")[0]["loss"]

    model, batch = tiny["gpt2"](seed=0), batches[0]  # the same initial weights
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = F.log_softmax(logits[:, :-1].double(), dim=-1)  # position t predicts t + 1
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[keep]
    uniform = -logp.mean(-1)[keep]  # cross entropy against the uniform distribution
    expected = ((1 - eps) * nll + eps * uniform).mean().item()
    assert logged == pytest.approx(expected, rel=1e-5)
    assert logged != pytest.approx(nll.mean().item(), rel=1e-3)


# --------------------------------------------------------------------------- R-Drop


def test_rdrop_term_on_a_hand_computable_case() -> None:
    # p = (1/2, 1/2) and q = (1/4, 3/4) at position 0; position 1 is ignored (-100) and the
    # identical distributions at position 2 add nothing
    a = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.3, 0.7]]]))
    b = torch.log(torch.tensor([[[0.25, 0.75], [0.1, 0.9], [0.3, 0.7]]]))
    labels = torch.tensor([[0, -100, 1]])
    kl_pq = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl_qp = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    term = rdrop_kl_sum(a, b, labels, shift=False)
    assert term.item() == pytest.approx((kl_pq + kl_qp) / 2, rel=1e-5)
    # shifted (causal): logits at t are scored where the label at t + 1 is a target
    shifted = rdrop_kl_sum(a, b, torch.tensor([[-100, 0, -100]]), shift=True)
    assert shifted.item() == pytest.approx((kl_pq + kl_qp) / 2, rel=1e-5)


@pytest.mark.parametrize(("dropout", "positive"), [(0.0, False), (0.3, True)])
def test_rdrop_term_is_zero_without_dropout_and_positive_with_it(
    tiny, dropout: float, positive: bool
) -> None:
    model = tiny["gpt2"](dropout=dropout, seed=0).train()
    batch = tiny["Collator"]()([tiny["dataset"](n=4)[i] for i in range(4)])
    torch.manual_seed(0)
    logits = model(input_ids=doubled(batch)["input_ids"]).logits
    first, second = logits.chunk(2)
    term = rdrop_kl_sum(first, second, batch["labels"], shift=True).item()
    if positive:
        assert term > 1e-3
    else:
        assert term == pytest.approx(0.0, abs=1e-6)


def test_rdrop_alpha_zero_is_the_plain_loss(tiny, tmp_path: Path) -> None:
    """alpha 0: one forward per batch, the same losses as a run without the option. Without
    dropout, alpha 1 also trains exactly like the plain loss (its term and gradient are 0)."""
    runs = {
        "plain": ({}, 0.1),
        "alpha0": ({"rdrop_alpha": 0.0}, 0.1),
        "nodrop": ({}, 0.0),
        "nodrop_alpha1": ({"rdrop_alpha": 1.0}, 0.0),
        "alpha1": ({"rdrop_alpha": 1.0}, 0.1),
    }
    logs = {}
    for name, (optim, dropout) in runs.items():
        tiny["run"](tmp_path / name, model=tiny["gpt2"](dropout=dropout), max_steps=3, optim=optim)
        logs[name] = train_rows(tmp_path / name)
    losses = {name: [row["loss"] for row in rows] for name, rows in logs.items()}
    assert losses["alpha0"] == losses["plain"]
    assert "rdrop_kl" not in logs["alpha0"][0]
    assert losses["nodrop_alpha1"] == pytest.approx(losses["nodrop"], rel=1e-5)
    assert [row["rdrop_kl"] for row in logs["nodrop_alpha1"]] == pytest.approx([0.0] * 3, abs=1e-6)
    assert all(row["rdrop_kl"] > 0 for row in logs["alpha1"])
    assert losses["alpha1"] != pytest.approx(losses["plain"], rel=1e-4)


@pytest.mark.parametrize("kind", ["seq2seq", "mlm_nsp"])
def test_rdrop_runs_for_every_model_head(tiny, tmp_path: Path, kind: str) -> None:
    model = tiny["t5"]() if kind == "seq2seq" else tiny["bert"]()
    tiny["run"](
        tmp_path / kind,
        model=model,
        collator=tiny["Collator"](kind),
        max_steps=2,
        optim={"rdrop_alpha": 0.5},
    )
    rows = train_rows(tmp_path / kind)
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    assert all(r["rdrop_kl"] == pytest.approx(0.0, abs=1e-6) for r in rows)  # no dropout
