"""From a ``RunConfig`` to a trained model: the glue between data, tokenizer, model,
objective and the training loop. ``lmforge pretrain|finetune`` and ``LM.fit`` both end here.

The steps, in order (as in transformers' run_summarization.py, but each one a library call):
1. check the run directory (a run with the same config resumes; another config is refused);
2. load every data source, split it deterministically, add counterfactual copies of the
   training rows (``augment.cda``), render it through its task template;
3. take the tokenizer: the pretrained model's, a trained one at ``tokenizer.path``, or train
   one on this run's training split;
4. build the model from scratch or load it pretrained; wrap it with LoRA when asked;
5. prepare each source with the objective, mix the sources by weight;
6. run the training loop, which writes checkpoints, metrics and ``final/``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import yaml
from accelerate import PartialState
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmforge.config import RunConfig, dump_config, fill_defaults
from lmforge.data.loading import load_source
from lmforge.data.splits import split_dataset
from lmforge.data.templates import to_pairs
from lmforge.errors import UserError
from lmforge.fsutil import write_json_atomic, write_text_atomic
from lmforge.models import apply_lora, build_model, load_pretrained, model_kind
from lmforge.objectives import get_objective, mix
from lmforge.responsible import cda
from lmforge.tokenizers import load_tokenizer, save_tokenizer, train_tokenizer
from lmforge.training.loop import TrainResult, train

Stage = Literal["pretrain", "finetune"]

# The usual objective for a model family at each stage (``objective.name: null``).
DEFAULT_OBJECTIVE: dict[tuple[str, str], str] = {
    ("pretrain", "t5"): "span_corruption",
    ("pretrain", "bert"): "mlm_nsp",
    ("pretrain", "gpt2"): "causal_lm",
    ("pretrain", "llama"): "causal_lm",
    ("finetune", "t5"): "seq2seq_sft",
    ("finetune", "gpt2"): "causal_sft",
    ("finetune", "llama"): "causal_sft",
}
PRETRAINING_OBJECTIVES = {"span_corruption", "mlm_nsp", "causal_lm"}
INPUTS = "inputs"  # in-memory data that LM.fit saved into the run directory
KIND_FAMILY = {"seq2seq": "t5", "causal": "gpt2", "encoder": "bert"}


@dataclass
class RunData:
    """Rendered (source, target, task) rows of every data source, per split."""

    train: list[datasets.Dataset]
    validation: list[datasets.Dataset]
    weights: list[float]
    counterfactual_rows: list[int] = field(default_factory=list)  # CDA copies per source


def objective_name(cfg: RunConfig, stage: Stage, family: str) -> str:
    """The configured objective, or the usual one for ``family`` at ``stage``."""
    if cfg.objective.name is not None:
        return cfg.objective.name
    name = DEFAULT_OBJECTIVE.get((stage, family))
    if name is None:
        raise UserError(
            f"no default {stage} objective for model family {family}; set objective.name "
            "(mlm_nsp pretrains a BERT-style encoder)"
        )
    return name


def load_run_data(cfg: RunConfig) -> RunData:
    """Load, split and render every source. Validation comes from ``cfg.validation`` when it
    is given, otherwise from each source's own validation split."""
    train_parts, validation_parts, weights, added = [], [], [], []
    swap = cda.swapper(cfg.augment.cda) if cfg.augment.cda.enabled else None
    for source in cfg.data:
        rows = load_source(source)
        if not isinstance(rows, datasets.Dataset):  # streaming is for inspect and tokenizers
            raise UserError(f"{source.path}: training needs a map-style dataset")
        splits = split_dataset(rows, source.split, cfg.seed)
        if len(splits["train"]) == 0:
            raise UserError(f"{source.path}: the train split is empty; lower split fractions")
        train_rows = splits["train"]
        if swap is not None:  # training rows only: validation and test stay as they are
            train_rows = cda.augment(train_rows, source.task, swap, cfg.augment.cda.fields)
            added.append(len(train_rows) - len(splits["train"]))
        train_parts.append(to_pairs(train_rows, source))
        weights.append(source.weight)
        if not cfg.validation and len(splits["validation"]):
            validation_parts.append(to_pairs(splits["validation"], source))
    for source in cfg.validation:
        validation_parts.append(to_pairs(load_source(source), source))
    return RunData(train_parts, validation_parts, weights, added)


def as_text(pairs: datasets.Dataset) -> datasets.Dataset:
    """Pretraining reads plain text: a labelled row contributes its source and target."""

    def join(batch: dict[str, list[str]]) -> dict[str, list[str]]:
        return {
            "text": [
                s if not t else f"{s}\n{t}"
                for s, t in zip(batch["source"], batch["target"], strict=True)
            ]
        }

    return pairs.map(join, batched=True, remove_columns=pairs.column_names)


def _training_texts(parts: list[datasets.Dataset]) -> Iterator[str]:
    for part in parts:
        for row in part:
            yield row["source"]
            if row["target"]:
                yield row["target"]


def resolve_tokenizer(cfg: RunConfig, data: RunData, run_dir: Path) -> PreTrainedTokenizerBase:
    """``tokenizer.path``, the one this run trained before (on resume), or a new one."""
    if cfg.tokenizer.path is not None:
        return load_tokenizer(cfg.tokenizer.path)
    saved = run_dir / "tokenizer"
    if saved.is_dir():
        return load_tokenizer(saved)
    tokenizer = train_tokenizer(
        _training_texts(data.train),
        kind=cfg.tokenizer.kind,
        vocab_size=cfg.tokenizer.vocab_size,
        min_frequency=cfg.tokenizer.min_frequency,
        max_texts=cfg.tokenizer.max_texts,
        seed=cfg.seed,
    )
    save_tokenizer(tokenizer, saved)
    return tokenizer


def _model_and_tokenizer(
    cfg: RunConfig, stage: Stage, data: RunData, run_dir: Path
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    if cfg.model.pretrained is not None:
        model, tokenizer = load_pretrained(
            cfg.model.pretrained,
            objective=cfg.objective.name,
            allow_pickle=cfg.model.allow_pickle,
            trust_remote_code=cfg.model.trust_remote_code,
            dropout=cfg.model.dropout,
        )
        # objective.name null: the checkpoint's own head, and that head's usual objective.
        name = objective_name(cfg, stage, KIND_FAMILY[model_kind(model)])
    else:
        name = objective_name(cfg, stage, cfg.model.family)
        tokenizer = resolve_tokenizer(cfg, data, run_dir)
        model = build_model(cfg.model, tokenizer, name, seed=cfg.seed)
    if cfg.model.lora.enabled:
        model = apply_lora(model, cfg.model.lora)
    return model, tokenizer, name


def prepare(
    parts: list[datasets.Dataset],
    weights: list[float] | None,
    objective: str,
    tokenizer: PreTrainedTokenizerBase,
    cfg: RunConfig,
) -> datasets.Dataset | None:
    """Each part through the objective's ``prepare``; several parts are mixed by weight, or
    simply concatenated when ``weights`` is None (validation sets are not resampled)."""
    spec = get_objective(objective)
    pretraining = objective in PRETRAINING_OBJECTIVES
    prepared, kept = [], []
    for part, weight in zip(parts, weights or [1.0] * len(parts), strict=True):
        if len(part) == 0:
            continue
        ready = spec.prepare(
            as_text(part) if pretraining else part, tokenizer, cfg.objective, cfg.seed
        )
        if len(ready):
            prepared.append(ready)
            kept.append(weight)
    if not prepared:
        return None
    if len(prepared) == 1:
        return prepared[0]
    if weights is None:
        joined = datasets.concatenate_datasets(prepared).remove_columns("idx")
        return joined.add_column("idx", range(len(joined)))
    return mix(prepared, kept, cfg.seed)


def check_run_dir(cfg: RunConfig, run_dir: Path, overwrite: bool) -> None:
    """A run directory holds one run: the same config resumes it, another is refused."""
    saved = run_dir / "config.yaml"
    if not run_dir.exists() or overwrite:
        if overwrite and run_dir.exists():
            shutil.rmtree(run_dir)
        return
    if not saved.is_file():
        if any(p.name != INPUTS for p in run_dir.iterdir()):
            raise UserError(
                f"{run_dir} exists and is not an lmforge run directory; choose another run_dir"
            )
        return
    # keys the saved config lacks (fields lmforge added since) count as their defaults
    previous = fill_defaults(yaml.safe_load(saved.read_text(encoding="utf-8")), RunConfig)
    current = cfg.model_dump(mode="json")
    changed = _changed_keys(previous, current)
    if changed:
        raise UserError(
            f"{run_dir} holds a run with a different config (changed: {', '.join(changed[:5])}); "
            "use the same config to resume it, another run_dir, or --overwrite to start over"
        )


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [
            k for key in keys for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [prefix.rstrip(".")]


def run_training(
    cfg: RunConfig,
    stage: Stage,
    *,
    overwrite: bool = False,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> TrainResult:
    """Train as ``cfg`` says and return the loop's result; ``final/`` holds the model.

    ``model`` and ``tokenizer`` (the Python API's ``LM.fit``) replace ``cfg.model``'s choice.
    """
    run_dir = Path(cfg.run_dir)
    state = PartialState()  # under torchrun: rank 0 prepares, the others reuse its outputs
    config_yaml = dump_config(cfg)
    with state.main_process_first():
        if state.is_main_process:
            check_run_dir(cfg, run_dir, overwrite)
        data = load_run_data(cfg)
        if state.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(run_dir / "config.yaml", config_yaml)
            if cfg.augment.cda.enabled:
                write_json_atomic(run_dir / AUGMENT_FILE, augment_summary(cfg, data))
        if model is None or tokenizer is None:
            model, tokenizer, objective = _model_and_tokenizer(cfg, stage, data, run_dir)
        else:
            objective = objective_name(cfg, stage, KIND_FAMILY[model_kind(model)])
            if cfg.model.lora.enabled:
                model = apply_lora(model, cfg.model.lora)
        train_set = prepare(data.train, data.weights, objective, tokenizer, cfg)
        eval_set = prepare(data.validation, None, objective, tokenizer, cfg)
    if train_set is None:
        raise UserError("no training examples are left after tokenization; check the data")
    spec = get_objective(objective)
    collator = spec.collator(tokenizer, cfg.objective, cfg.seed, getattr(model, "config", None))
    result = train(
        model,
        tokenizer,
        train_set,
        collator,
        run_dir=run_dir,
        optim=cfg.optim,
        train=cfg.train,
        seed=cfg.seed,
        eval_dataset=eval_set,
        config_yaml=config_yaml,
        resume=True,
        energy=cfg.energy,
    )
    if state.is_main_process:
        write_model_card(result.final_dir, cfg, objective)
    return result


def augment_summary(cfg: RunConfig, data: RunData) -> dict[str, Any]:
    """What CDA added, per data source (written to ``augment.json``)."""
    return {
        "cda": [
            {"path": s.path, "train_rows": len(part), "counterfactual_rows": added}
            for s, part, added in zip(cfg.data, data.train, data.counterfactual_rows, strict=True)
        ]
    }


MODEL_CARD = "lmforge.json"
AUGMENT_FILE = "augment.json"


def write_model_card(model_dir: Path, cfg: RunConfig, objective: str) -> None:
    """Record how the model was trained, so generation and serving apply the same template."""
    card = {
        "objective": objective,
        "tasks": [
            {"task": s.task, "template": s.template.model_dump(mode="json")} for s in cfg.data
        ],
        "max_source_length": cfg.objective.max_source_length,
        "max_target_length": cfg.objective.max_target_length,
        "seed": cfg.seed,
    }
    write_json_atomic(Path(model_dir) / MODEL_CARD, card)


def read_model_card(model_dir: str | Path) -> dict[str, Any]:
    """The card ``write_model_card`` left, or {} for a model lmforge did not train."""
    path = Path(model_dir) / MODEL_CARD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{path}: not a readable lmforge model card (JSON)") from None
