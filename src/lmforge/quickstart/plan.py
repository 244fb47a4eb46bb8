"""The quickstart's recipe: model size, sequence lengths, schedules and how the budget is spent.

The plan is a pure function of (preset, minutes): step counts, not wall time, decide when a
stage ends, so the same seed gives the same model on the same machine however busy it is.
Each preset's step counts were measured to fit its reference budget on its reference machine
(the ``laptop`` preset: 10 minutes on 2 CPU cores, see docs/quickstart.md); ``--minutes``
scales them linearly. Every training stage also gets a wall-time cap (its share of the budget
with some slack), so a slower machine still finishes near the budget: a stage stopped by the
cap is reported as such, and only then does the result depend on the machine's speed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from lmforge.errors import UserError


@dataclass(frozen=True)
class Plan:
    """Everything the quickstart decides before it starts."""

    preset: str
    minutes: float
    model_preset: str  # lmforge.models preset the overrides apply to
    model_overrides: dict[str, Any]
    vocab_size: int
    tokenizer_texts: int  # tokenizer trained on a seeded sample of this many texts
    pretrain_steps: int
    pretrain_batch_size: int
    block_size: int
    pretrain_lr: float
    pretrain_texts: int  # span corruption reads a seeded sample of this many texts
    finetune_steps: int
    finetune_batch_size: int
    finetune_lr: float
    warmup_steps: int
    max_source_length: int
    max_target_length: int
    eval_examples: int  # held-out examples per task
    site_packages_files: int | None = 1500  # None: all of site-packages (a minute or more)
    task_weights: dict[str, float] = field(default_factory=dict)
    max_new_tokens: dict[str, int] = field(default_factory=dict)
    num_beams: int = 1
    share: dict[str, float] = field(default_factory=dict)  # budget share of each stage

    def stage_minutes(self, stage: str) -> float:
        """The wall-time cap of a training stage: its share of the budget plus 50%, plus a
        minute for what every stage does before its first step (tokenizing, measuring peak)."""
        return self.minutes * self.share[stage] * 1.5 + 1.0

    @property
    def train_examples_per_task(self) -> int:
        """Fine-tuning reads at most this many (shuffled) training examples of each task:
        as many as the steps can use, so no time goes to tokenizing what is never seen."""
        return self.finetune_steps * self.finetune_batch_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


REFERENCE_MINUTES = 10.0
_TASK_WEIGHTS = {"code-comment": 1.0, "code-generate": 1.0, "code-complete": 1.0, "translate": 1.0}
_NEW_TOKENS = {"code-comment": 32, "code-generate": 64, "code-complete": 32, "translate": 48}
_SHARE = {"pretrain": 0.3, "finetune": 0.2, "finetune-scratch": 0.2}

PRESETS: dict[str, Plan] = {
    # 2 CPU cores, 10 minutes: a narrow, shallow T5 with a small vocabulary.
    "laptop": Plan(
        preset="laptop",
        minutes=REFERENCE_MINUTES,
        model_preset="small",
        model_overrides=dict(d_model=192, d_kv=48, d_ff=512, num_layers=3, num_heads=4),
        vocab_size=8000,
        tokenizer_texts=40_000,
        pretrain_steps=120,
        pretrain_batch_size=32,
        block_size=128,
        pretrain_lr=3e-3,
        pretrain_texts=20_000,
        finetune_steps=120,
        finetune_batch_size=32,
        finetune_lr=2e-3,
        warmup_steps=30,
        max_source_length=192,
        max_target_length=64,
        eval_examples=200,
        task_weights=_TASK_WEIGHTS,
        max_new_tokens=_NEW_TOKENS,
        share=_SHARE,
    ),
}
PRESETS["small"] = replace(
    PRESETS["laptop"],
    preset="small",
    minutes=60.0,
    model_overrides={},
    pretrain_steps=1000,
    pretrain_texts=200_000,
    finetune_steps=800,
    pretrain_lr=2e-3,
    finetune_lr=1e-3,
    warmup_steps=100,
    eval_examples=500,
    site_packages_files=None,
)
# For a GPU: T5-base sized, longer sequences.
PRESETS["base"] = replace(
    PRESETS["small"],
    preset="base",
    model_preset="base",
    vocab_size=16000,
    tokenizer_texts=200_000,
    block_size=256,
    max_source_length=256,
    pretrain_steps=4000,
    finetune_steps=3000,
    pretrain_lr=1e-3,
    finetune_lr=5e-4,
    pretrain_texts=1_000_000,
    eval_examples=1000,
    num_beams=4,
)
# What the end-to-end test runs: every stage, in seconds.
PRESETS["test"] = replace(
    PRESETS["laptop"],
    preset="test",
    minutes=1.0,
    model_preset="tiny",
    model_overrides={},
    vocab_size=400,
    tokenizer_texts=2000,
    pretrain_steps=4,
    pretrain_batch_size=4,
    block_size=32,
    pretrain_texts=200,
    finetune_steps=4,
    finetune_batch_size=4,
    warmup_steps=1,
    max_source_length=48,
    max_target_length=16,
    eval_examples=6,
    site_packages_files=0,
    max_new_tokens={task: 8 for task in _NEW_TOKENS},
)


def make_plan(preset: str, minutes: float | None) -> Plan:
    """The preset's plan with its step counts scaled to ``minutes`` (None: its own budget)."""
    if preset not in PRESETS:
        raise UserError(f"unknown --preset {preset!r}; choose from {', '.join(PRESETS)}")
    base = PRESETS[preset]
    if minutes is None or minutes == base.minutes:
        return base
    if minutes <= 0:
        raise UserError(f"--minutes must be positive, got {minutes}")
    scale = minutes / base.minutes
    return replace(
        base,
        minutes=minutes,
        pretrain_steps=max(1, round(base.pretrain_steps * scale)),
        finetune_steps=max(1, round(base.finetune_steps * scale)),
        warmup_steps=max(1, round(base.warmup_steps * min(scale, 1.0))),
    )
