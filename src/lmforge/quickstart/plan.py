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
    # Greedy decoding of a small model repeats itself ("the the the"); prose targets block
    # repeated trigrams and penalise repeats, code targets (which repeat `self.`) do not.
    decoding: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropout: float = 0.0  # a few minutes of training underfits: dropout only slows it down
    # span corruption's labels: the whole text, not only the hidden spans. Pretrained on spans,
    # the model fine-tuned no better than one from scratch (docs/quickstart.md).
    pretrain_targets: str = "text"
    parallel: bool = True  # on a CPU: fine-tune from scratch in a second process (one thread)
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
_TASK_WEIGHTS = {"code-comment": 1.5, "code-generate": 1.0, "code-complete": 1.0, "translate": 1.5}
_NEW_TOKENS = {"code-comment": 24, "code-generate": 48, "code-complete": 24, "translate": 32}
_PROSE = {"no_repeat_ngram_size": 3, "repetition_penalty": 1.3}
_DECODING = {"code-comment": _PROSE, "translate": _PROSE, "code-complete": {"stop": ["\n"]}}
# Budget shares of the training stages; from-scratch fine-tuning runs beside the other two.
_SHARE = {"pretrain": 0.4, "finetune": 0.35, "finetune-scratch": 0.75}

PRESETS: dict[str, Plan] = {
    # 2 CPU cores, 10 minutes: a narrow, shallow T5 with a small vocabulary.
    "laptop": Plan(
        preset="laptop",
        minutes=REFERENCE_MINUTES,
        model_preset="small",
        model_overrides=dict(d_model=128, d_kv=32, d_ff=384, num_layers=2, num_heads=4),
        vocab_size=4000,
        tokenizer_texts=20_000,
        pretrain_steps=200,
        pretrain_batch_size=32,
        block_size=64,  # whole-text labels make a step ~2.5x dearer than span labels at 128
        pretrain_lr=5e-3,
        pretrain_texts=10_000,
        finetune_steps=480,
        finetune_batch_size=32,
        finetune_lr=3e-3,
        warmup_steps=50,
        max_source_length=96,
        max_target_length=32,
        eval_examples=200,
        task_weights=_TASK_WEIGHTS,
        max_new_tokens=_NEW_TOKENS,
        decoding=_DECODING,
        share=_SHARE,
    ),
}
PRESETS["small"] = replace(
    PRESETS["laptop"],
    preset="small",
    minutes=60.0,
    model_overrides={},  # T5 small: d_model 256, 4+4 layers (sized by estimate, not measured)
    vocab_size=8000,
    tokenizer_texts=40_000,
    block_size=128,
    pretrain_steps=800,  # whole-text labels: about what 2,000 steps of span labels cost
    pretrain_batch_size=16,
    pretrain_texts=200_000,
    finetune_steps=3000,
    finetune_batch_size=16,
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


def make_plan(preset: str, minutes: float | None, overrides: list[str] | None = None) -> Plan:
    """The preset's plan with its step counts scaled to ``minutes`` (None: its own budget),
    then ``overrides`` ("field=value", the value in YAML) applied, e.g. "finetune_steps=800"."""
    if preset not in PRESETS:
        raise UserError(f"unknown --preset {preset!r}; choose from {', '.join(PRESETS)}")
    plan = PRESETS[preset]
    if minutes is not None and minutes != plan.minutes:
        if minutes <= 0:
            raise UserError(f"--minutes must be positive, got {minutes}")
        scale = minutes / plan.minutes
        plan = replace(
            plan,
            minutes=minutes,
            pretrain_steps=max(1, round(plan.pretrain_steps * scale)),
            finetune_steps=max(1, round(plan.finetune_steps * scale)),
            warmup_steps=max(1, round(plan.warmup_steps * min(scale, 1.0))),
        )
    return replace(plan, **dict(_override(plan, item) for item in overrides or []))


def _override(plan: Plan, item: str) -> tuple[str, Any]:
    import difflib

    import yaml

    key, sep, text = item.partition("=")
    key = key.strip()
    fields = [f for f in plan.to_dict() if f != "preset"]
    if not sep or key not in fields:
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; fields: {', '.join(fields)}"
        raise UserError(f"--set {item!r}: no plan field {key!r}{hint}")
    value = yaml.safe_load(text)
    current = getattr(plan, key)
    number = isinstance(current, int | float) and not isinstance(current, bool)
    if number and isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads 1e-2 as a string
        except ValueError:
            pass
    if number:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and isinstance(current, int):
            ok, value = value == int(value), int(value)
    else:
        ok = current is None or isinstance(value, type(current))
    if not ok:
        raise UserError(f"--set {item!r}: {key} takes a {type(current).__name__}, got {text!r}")
    return key, value
