"""Typed run configs: YAML files validated by pydantic, with ``--set`` overrides.

Every config model forbids unknown keys. Loading reports *all* problems at once, each with
its YAML path (``train.lr``), what was wrong, and for a misspelt key the closest valid one.
The resolved config is written into every run directory, so ``lmforge pretrain
RUN_DIR/config.yaml`` repeats the run.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from lmforge.errors import UserError

TaskName = Literal[
    "text",
    "summarize",
    "translate",
    "qa",
    "code-generate",
    "code-complete",
    "code-comment",
    "write",
]
ModelFamily = Literal["t5", "bert", "gpt2", "llama"]
ObjectiveName = Literal["span_corruption", "mlm_nsp", "causal_lm", "seq2seq_sft", "causal_sft"]


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- data


class TemplateConfig(StrictModel):
    """How a task row becomes (source, target). ``None`` keeps the task's default prefix."""

    prefix: str | None = None
    source_lang: str = "English"
    target_lang: str = "Chinese"


class SplitConfig(StrictModel):
    """Deterministic train/validation/test split of one source."""

    validation: float = Field(0.05, ge=0.0, lt=1.0)
    test: float = Field(0.05, ge=0.0, lt=1.0)
    group_by: str | None = None  # e.g. "path": rows sharing a value stay in one split
    seed: int | None = None  # None: use the run's seed

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.validation + self.test >= 1.0:
            raise ValueError("validation + test must leave some rows for training (sum < 1)")
        return self


class DataSource(StrictModel):
    """One dataset: a file, a directory of files, or a ``save_to_disk`` directory."""

    path: str
    task: TaskName = "text"
    format: Literal["auto", "jsonl", "json", "csv", "tsv", "parquet", "text", "arrow"] = "auto"
    text_unit: Literal["line", "file"] = "line"  # plain text: one document per line or per file
    columns: dict[str, str] = Field(default_factory=dict)  # template field -> column in the file
    template: TemplateConfig = Field(default_factory=TemplateConfig)
    weight: float = Field(1.0, gt=0.0)  # sampling weight when several tasks are mixed
    split: SplitConfig = Field(default_factory=SplitConfig)
    max_rows: int | None = Field(None, gt=0)  # debug knob, like --max_train_samples


# --------------------------------------------------------------------------- model


class TokenizerConfig(StrictModel):
    """Either a trained tokenizer directory (``path``) or train one on the run's data."""

    path: str | None = None
    kind: Literal["bpe", "unigram"] = "bpe"
    vocab_size: int = Field(8000, ge=363)  # 256 bytes + 107 special tokens at least
    min_frequency: int = Field(2, ge=1)
    max_texts: int | None = Field(None, ge=1)  # train on a seeded sample of this many texts


class LoraConfig(StrictModel):
    enabled: bool = False
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None  # None: the architecture's default


class ModelConfig(StrictModel):
    """A model built from scratch (family + preset) or loaded from ``pretrained``."""

    family: ModelFamily = "t5"
    preset: Literal["tiny", "small", "base"] = "tiny"
    pretrained: str | None = None  # checkpoint directory or a Hub id already in the local cache
    overrides: dict[str, Any] = Field(default_factory=dict)  # extra HF config fields
    allow_pickle: bool = False  # load .bin/.pt weights (pickle can run code: off by default)
    trust_remote_code: bool = False
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    lora: LoraConfig = Field(default_factory=LoraConfig)


# --------------------------------------------------------------------------- training


class ObjectiveConfig(StrictModel):
    """The self-supervised or supervised objective; ``name: null`` picks the usual one for the
    model family and stage (pretrain: span_corruption / mlm_nsp / causal_lm; finetune:
    seq2seq_sft / causal_sft)."""

    name: ObjectiveName | None = None
    noise_density: float = Field(0.15, gt=0.0, lt=1.0)
    mean_span_length: float = Field(3.0, gt=0.0)
    # span corruption's labels: "spans" (T5: each sentinel and the tokens it hid) or "text"
    # (the whole original block, as BART's text infilling; see objectives/span_corruption.py)
    span_targets: Literal["spans", "text"] = "spans"
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    nsp_probability: float = Field(0.5, ge=0.0, le=1.0)
    block_size: int = Field(256, ge=8)  # packed length for pretraining objectives
    max_source_length: int = Field(256, ge=4)
    max_target_length: int = Field(128, ge=2)


class OptimConfig(StrictModel):
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-8, gt=0.0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    grad_clip: float | None = Field(1.0, gt=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    rdrop_alpha: float = Field(0.0, ge=0.0)  # R-Drop consistency weight; 0: off (one forward)


class TrainConfig(StrictModel):
    max_steps: int = Field(1000, ge=1)
    max_minutes: float | None = Field(None, gt=0.0)  # stop (and checkpoint) after this wall time
    batch_size: int = Field(16, ge=1)  # per process, per micro-step
    grad_accum: int = Field(1, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    group_by_length: bool = True  # batches of similar length (seq2seq: source, then target)
    eval_every: int = Field(200, ge=1)
    eval_batches: int | None = Field(None, ge=1)
    save_every: int = Field(500, ge=1)
    keep_last: int = Field(2, ge=1)
    metric: str = "eval_loss"  # chosen metric for best checkpoint and early stopping
    metric_mode: Literal["min", "max"] = "min"
    early_stopping_patience: int | None = Field(None, ge=1)
    log_every: int = Field(10, ge=1)
    num_workers: int = Field(0, ge=0)


# --------------------------------------------------------------------------- augmentation


class CdaConfig(StrictModel):
    """Counterfactual data augmentation: each training row that mentions a listed term gets a
    copy with the terms swapped (lmforge.responsible.cda; docs/bias.md)."""

    enabled: bool = False
    lists: list[str] = Field(default_factory=lambda: ["gender"])  # built-in word-pair lists
    user_file: str | None = None  # extra pairs, same TSV format; listed first, so they win
    categories: list[str] | None = None  # None: every category of the lists
    languages: list[Literal["en", "zh"]] = Field(default_factory=lambda: ["en", "zh"])
    fields: list[str] | None = None  # None: every text field of the task template


class AugmentConfig(StrictModel):
    cda: CdaConfig = Field(default_factory=CdaConfig)


# --------------------------------------------------------------------------- compute


class EnergyConfig(StrictModel):
    """Energy/CO2 estimate inputs; None: LMFORGE_POWER_WATTS / LMFORGE_GRID_GCO2_PER_KWH, else
    defaults (lmforge.training.compute; docs/compute.md)."""

    power_watts: float | None = Field(None, gt=0.0)  # per device
    grid_gco2_per_kwh: float | None = Field(None, ge=0.0)


class RunConfig(StrictModel):
    """A pretraining or fine-tuning run: what ``lmforge pretrain|finetune CONFIG`` reads."""

    run_dir: str = "runs/run"
    seed: int = 42
    data: list[DataSource] = Field(min_length=1)
    validation: list[DataSource] = Field(default_factory=list)  # empty: use the splits of ``data``
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)  # training split only
    energy: EnergyConfig = Field(default_factory=EnergyConfig)  # compute.json's estimate


# --------------------------------------------------------------------------- loading

C = TypeVar("C", bound=BaseModel)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value) with the value parsed as YAML (so 3, true, [1,2])."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected KEY=VALUE, for example --set train.lr=3e-4")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise UserError(f"--set {item!r}: the key must be a dotted path such as train.lr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides in place. List items are addressed by index: data.0.path=x."""
    for item in overrides:
        parts, value = parse_override(item)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = _list_item(node, part, parts[: i + 1], item)
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, (dict, list)):
                    raise UserError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a section")
        last = parts[-1]
        if isinstance(node, list):
            _list_item(node, last, parts, item)
            node[int(last)] = value
        else:
            node[last] = value
    return data


def _list_item(node: list[Any], part: str, path: list[str], item: str) -> Any:
    if not part.isdigit() or int(part) >= len(node):
        raise UserError(f"--set {item!r}: {'.'.join(path)} needs a list index below {len(node)}")
    return node[int(part)]


def _fields_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the config section that ``loc`` points into (for suggestions)."""
    model: Any = cls
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(part)
        if field is None:
            break
        model = _inner_model(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError, cls: type[BaseModel], source: str) -> str:
    """All problems of one config, one per line, with YAML paths and suggestions."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            valid = _fields_at(cls, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            choices = f" (valid keys: {', '.join(valid)})" if valid and not close else ""
            lines.append(f"{path}: unknown key{hint}{choices}")
        elif err["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            got = err.get("input")
            shown = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
            lines.append(f"{path}: {err['msg']}{shown}")
    plural = "problem" if len(lines) == 1 else "problems"
    return f"{source}: {len(lines)} config {plural}: " + "; ".join(lines)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file {path} does not exist")
    if path.is_dir():
        raise UserError(f"config {path} is a directory; expected a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    return data


def validate(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, cls, source)) from None


def load_config(path: str | Path | None, cls: type[C], overrides: list[str] | None = None) -> C:
    """Read YAML at ``path`` (or start empty), apply ``--set`` overrides, validate into ``cls``."""
    data = read_yaml(path) if path is not None else {}
    apply_overrides(data, overrides or [])
    return validate(cls, data, str(path) if path is not None else "--set")


def fill_defaults(data: Any, cls: type[BaseModel]) -> Any:
    """``data`` (a config as YAML gave it) with every key it lacks at its default, as JSON
    values, through nested sections and lists of them; keys ``cls`` does not know are kept.

    A run directory's config.yaml written before lmforge grew a field lacks that field; filled
    in, it compares equal to a config that leaves the field at its default."""
    if not isinstance(data, dict):
        return data
    filled = dict(data)
    for name, field in cls.model_fields.items():
        section = _inner_model(field.annotation)
        if name not in filled:
            if not field.is_required():
                default = field.get_default(call_default_factory=True)
                filled[name] = TypeAdapter(field.annotation).dump_python(default, mode="json")
        elif section is not None and isinstance(filled[name], list):
            filled[name] = [fill_defaults(item, section) for item in filled[name]]
        elif section is not None:
            filled[name] = fill_defaults(filled[name], section)
    return filled


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML, every default spelled out."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
