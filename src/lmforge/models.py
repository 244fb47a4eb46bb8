"""Models: Hugging Face model classes used as they are, built from presets or loaded; LoRA via PEFT.

* ``build_model`` makes a fresh T5 / BERT / GPT-2 / Llama model from a size preset, sized to the
  tokenizer (``vocab_size = len(tokenizer)``, special token ids taken from it).
* ``load_pretrained`` loads any compatible checkpoint directory, Hub id already in the local
  cache, or lmforge LoRA adapter directory, offline, from safetensors only unless told otherwise.
* ``apply_lora`` / ``save_adapter`` / ``merge_and_export`` wrap PEFT: adapters train and save on
  their own, and merge back into a plain Transformers directory for anyone to load.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal

import peft
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HFValidationError, StrictDataclassError
from huggingface_hub.utils import validate_repo_id
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_PRETRAINING_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
)
from transformers.pytorch_utils import Conv1D

from lmforge.config import LoraConfig, ModelConfig
from lmforge.errors import UserError
from lmforge.fsutil import atomic_dir, refuse_to_overwrite

ModelKind = Literal["seq2seq", "causal", "encoder"]

# What each objective trains, and so which kind of model it needs. "mlm" is masked LM without
# the next-sentence head (BertForMaskedLM); "mlm_nsp" trains both BERT pre-training heads.
OBJECTIVE_KIND: dict[str, ModelKind] = {
    "span_corruption": "seq2seq",
    "seq2seq_sft": "seq2seq",
    "mlm_nsp": "encoder",
    "mlm": "encoder",
    "causal_lm": "causal",
    "causal_sft": "causal",
}
FAMILY_KIND: dict[str, ModelKind] = {
    "t5": "seq2seq",
    "bert": "encoder",
    "gpt2": "causal",
    "llama": "causal",
}
_KIND_NEEDS = {
    "seq2seq": "an encoder-decoder model (family t5)",
    "encoder": "an encoder model (family bert)",
    "causal": "a decoder-only model (family gpt2 or llama)",
}

# Size presets. tiny: tests (2 layers, d_model 64). small: trains on a laptop CPU (5-10M
# parameters with an 8k vocabulary). base: the family's published base size, for a GPU.
# T5 uses the v1.1 gated-GELU feed-forward (d_ff ~ 8/3 d_model, as in t5-v1_1-base): GLU
# variants beat ReLU at equal compute (Shazeer 2020, "GLU Variants Improve Transformer"), and
# it is the layout of mT5 / Flan-T5, so a model made here has the shape users fine-tune later.
# Embeddings stay tied (transformers 5 always ties T5's lm_head to the shared embedding).
# Llama has no official "base"; base is GPT-2-base scale with SwiGLU width 8/3 d and 4 KV heads.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "t5": {
        "tiny": dict(d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2),
        "small": dict(d_model=256, d_kv=64, d_ff=768, num_layers=4, num_heads=4),
        "base": dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12),
    },
    "bert": {
        "tiny": dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256
        ),
        "small": dict(
            hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
        ),
        "base": dict(
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
        ),
    },
    "gpt2": {
        "tiny": dict(n_embd=64, n_layer=2, n_head=2, n_positions=512),
        "small": dict(n_embd=256, n_layer=4, n_head=4, n_positions=512),
        "base": dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024),
    },
    "llama": {
        "tiny": dict(
            hidden_size=64,
            intermediate_size=176,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
        ),
        "small": dict(
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
        ),
        "base": dict(
            hidden_size=768,
            intermediate_size=2048,
            num_hidden_layers=12,
            num_attention_heads=12,
            num_key_value_heads=4,
            max_position_embeddings=2048,
        ),
    },
}
# Fields every preset of a family shares (the T5 choice is explained above).
_FAMILY_FIELDS: dict[str, dict[str, Any]] = {"t5": {"feed_forward_proj": "gated-gelu"}}
_CONFIG_CLASS: dict[str, type[PreTrainedConfig]] = {
    "t5": T5Config,
    "bert": BertConfig,
    "gpt2": GPT2Config,
    "llama": LlamaConfig,
}
# The config fields that ModelConfig.dropout sets (Llama has attention dropout only).
_DROPOUT_FIELDS = {
    "t5": ("dropout_rate",),
    "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop"),
    "llama": ("attention_dropout",),
}
# Special tokens each family cannot work without (T5 starts decoding from pad).
_REQUIRED_TOKENS = {
    "t5": ("pad", "eos"),
    "bert": ("pad", "cls", "sep", "mask"),
    "gpt2": ("pad", "eos"),
    "llama": ("pad", "eos"),
}

# Which Auto class loads an architecture, found by the Auto mappings that list it. Order
# matters: GPT-2's LM head is also listed under pre-training, BERT's under causal LM.
_AUTO_CLASSES: list[tuple[Any, Any, ModelKind]] = [
    (MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES, AutoModelForSeq2SeqLM, "seq2seq"),
    (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, AutoModelForCausalLM, "causal"),
    (MODEL_FOR_MASKED_LM_MAPPING_NAMES, AutoModelForMaskedLM, "encoder"),
    (MODEL_FOR_PRETRAINING_MAPPING_NAMES, AutoModelForPreTraining, "encoder"),
]
_PEFT_TASK = {
    "seq2seq": peft.TaskType.SEQ_2_SEQ_LM,
    "causal": peft.TaskType.CAUSAL_LM,
    "encoder": None,
}
# LoRA targets for model types PEFT has no default for: attention projections by usual names.
_FALLBACK_LORA_TARGETS = [
    ("q_proj", "v_proj"),
    ("q", "v"),
    ("query", "value"),
    ("c_attn",),
    ("query_key_value",),
    ("qkv_proj",),
]
ADAPTER_CONFIG = "adapter_config.json"
_PICKLE_FLAG = "model.allow_pickle: true (CLI: --allow-pickle)"


# --------------------------------------------------------------------------- from scratch


def build_model(
    cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, objective: str, *, seed: int = 42
) -> PreTrainedModel:
    """A freshly initialised model of ``cfg.family`` / ``cfg.preset`` with the head ``objective``
    trains, sized to ``tokenizer``. The same seed gives the same weights; the global RNG is
    left as it was."""
    family = cfg.family
    check_objective_fits(objective, FAMILY_KIND[family], f"family {family}")
    config = _hf_config(cfg, tokenizer)
    if family == "t5":
        model_class: type[PreTrainedModel] = T5ForConditionalGeneration
    elif family == "bert":
        model_class = BertForPreTraining if objective == "mlm_nsp" else BertForMaskedLM
    elif family == "gpt2":
        model_class = GPT2LMHeadModel
    else:
        model_class = LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return model_class(config)
        except ValueError as exc:  # shapes the overrides made inconsistent (e.g. n_embd % n_head)
            if not cfg.overrides:
                raise
            raise UserError(f"model.overrides for family {family}: {_one_line(exc)}") from None


def check_objective_fits(objective: str, kind: ModelKind, what: str) -> None:
    """Raise a UserError unless ``objective`` trains a model of ``kind`` (``what`` names it)."""
    if objective not in OBJECTIVE_KIND:
        raise UserError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVE_KIND)}")
    needed = OBJECTIVE_KIND[objective]
    if needed != kind:
        raise UserError(f"objective {objective} needs {_KIND_NEEDS[needed]}; got {what}")


def _hf_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedConfig:
    """The HF config: preset shape, then tokenizer-given vocab and ids, dropout, overrides."""
    family = cfg.family
    config_class = _CONFIG_CLASS[family]
    fields: dict[str, Any] = {**_FAMILY_FIELDS.get(family, {}), **PRESETS[family][cfg.preset]}
    fields.update(_token_fields(family, tokenizer))
    if cfg.dropout is not None:
        fields.update({name: cfg.dropout for name in _DROPOUT_FIELDS[family]})
    valid = set(config_class().to_dict()) | set(config_class.attribute_map)
    for key, value in cfg.overrides.items():
        where = f"model.overrides.{key}"
        if key == "vocab_size" or key.endswith("_token_id"):
            raise UserError(
                f"{where}: set from the tokenizer (len(tokenizer) and its special tokens)"
            )
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"{where}: {config_class.__name__} has no field {key!r}{hint}")
        fields[key] = value
    try:
        return config_class(**fields)
    except (TypeError, ValueError, StrictDataclassError) as exc:
        raise UserError(f"model.overrides for family {family}: {_one_line(exc)}") from None


def _token_fields(family: str, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    missing = [
        f"{name}_token"
        for name in _REQUIRED_TOKENS[family]
        if getattr(tokenizer, f"{name}_token_id", None) is None
    ]
    if missing:
        raise UserError(
            f"the tokenizer has no {', '.join(missing)}; family {family} needs "
            + ", ".join(f"{name}_token" for name in _REQUIRED_TOKENS[family])
        )
    fields: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
    }
    if family == "t5":
        fields.update(
            eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id
        )
    elif family in ("gpt2", "llama"):
        bos = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        fields.update(bos_token_id=bos, eos_token_id=tokenizer.eos_token_id)
    return fields


# --------------------------------------------------------------------------- inspecting


def model_kind(model: nn.Module) -> ModelKind:
    """``seq2seq`` (encoder-decoder), ``causal`` (decoder-only LM) or ``encoder`` (masked LM)."""
    base = _unwrap(model)
    if getattr(base.config, "is_encoder_decoder", False):
        return "seq2seq"
    kind = _architecture_kind(type(base).__name__)
    if kind is None:
        raise ValueError(f"{type(base).__name__} is not a language-model class lmforge knows")
    return kind


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones counted once); with ``trainable_only`` those with grad."""
    return _unwrap(model).num_parameters(only_trainable=trainable_only)


def _unwrap(model: nn.Module) -> PreTrainedModel:
    return model.get_base_model() if isinstance(model, peft.PeftModel) else model


def _architecture_kind(class_name: str) -> ModelKind | None:
    for names, _, kind in _AUTO_CLASSES:
        if _listed(class_name, names):
            return kind
    return None


def _listed(class_name: str, names: dict[str, str | tuple[str, ...]]) -> bool:
    """Whether an Auto mapping (model type -> class name or names) lists ``class_name``."""
    return any(class_name in ((v,) if isinstance(v, str) else v) for v in names.values())


# --------------------------------------------------------------------------- pretrained


def load_pretrained(
    name_or_path: str | Path,
    *,
    objective: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    dtype: str | torch.dtype | None = None,
    dropout: float | None = None,
) -> tuple[PreTrainedModel | peft.PeftModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) from a checkpoint directory, a Hub id in the local cache, or an
    lmforge LoRA adapter directory (base + adapter). Never reaches the network. ``objective``
    picks the head and must fit the architecture; ``dtype`` None keeps the checkpoint's;
    ``dropout`` (``model.dropout``) replaces the checkpoint's dropout rates, None keeps them."""
    directory = resolve_checkpoint(name_or_path)
    if (directory / ADAPTER_CONFIG).is_file():
        return _load_with_adapter(
            directory, objective, allow_pickle, trust_remote_code, dtype, dropout
        )
    use_safetensors = _check_weights(directory, allow_pickle)
    try:
        config = AutoConfig.from_pretrained(
            directory, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise _remote_code_or(exc, directory / "config.json", trust_remote_code) from None
    if dropout is not None:
        # on the config, before the model is built: every nn.Dropout (and the attention
        # dropout some attention kernels read as a float) is made with the new rate
        for name in _dropout_fields(config, directory):
            setattr(config, name, dropout)
    auto_class = _auto_class_for(config, objective, directory)
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype)} if dtype is not None else {}
    try:
        model = auto_class.from_pretrained(
            directory,
            config=config,
            local_files_only=True,
            use_safetensors=use_safetensors,
            trust_remote_code=trust_remote_code,
            **kwargs,
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"{directory}: cannot load the weights: {_one_line(exc)}") from None
    return model, _load_tokenizer(directory, trust_remote_code)


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """The local directory behind a path or a Hub id in the local cache (no network look-up)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
            raise UserError(f"{path} is not a model directory: it has no config.json")
        return path.resolve()
    if path.exists():
        raise UserError(f"{path} is a file; expected a model directory (with config.json)")
    name = str(name_or_path)
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise UserError(f"model directory {name} does not exist") from None
    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        return Path(cached).parent
    raise UserError(
        f"{name} is not a local directory and not in the local Hugging Face cache "
        f"({hub_constants.HF_HUB_CACHE}); lmforge never downloads: fetch it first with "
        f"`hf download {name}` where there is network, or pass a checkpoint directory"
    )


def _check_weights(directory: Path, allow_pickle: bool, stem: str = "model") -> bool:
    """True when safetensors weights are there; pickle-only weights need ``allow_pickle``."""
    if any(directory.glob("*.safetensors")):
        return True
    pickles = [p for pattern in ("*.bin", "*.pt", "*.pth") for p in sorted(directory.glob(pattern))]
    if not pickles:
        raise UserError(f"{directory} has no {stem} weights (expected {stem}.safetensors)")
    if not allow_pickle:
        raise UserError(
            f"{pickles[0]} holds pickle weights, which can run code when loaded, and there are no "
            f"safetensors; convert them, or if you trust the source set {_PICKLE_FLAG}"
        )
    return False


def _auto_class_for(config: PreTrainedConfig, objective: str | None, directory: Path) -> Any:
    """The Auto class for this checkpoint's architecture, checked against ``objective``."""
    architectures = getattr(config, "architectures", None) or []
    arch = architectures[0] if architectures else config.model_type
    kind = _architecture_kind(arch) if architectures else None
    if kind is None:
        if getattr(config, "is_encoder_decoder", False):
            kind = "seq2seq"
        elif config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
            kind = "encoder"
        elif config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            kind = "causal"
        else:
            raise UserError(
                f"{directory / 'config.json'}: {arch} is not a seq2seq, causal or masked "
                "language model that lmforge can train or generate with"
            )
    if objective is not None:
        check_objective_fits(objective, kind, f"{directory} with {arch} ({kind})")
    if kind == "seq2seq":
        return AutoModelForSeq2SeqLM
    if kind == "causal":
        return AutoModelForCausalLM
    if objective == "mlm_nsp":
        return AutoModelForPreTraining
    if objective == "mlm" or _listed(arch, MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        return AutoModelForMaskedLM
    return AutoModelForPreTraining


def _dropout_fields(config: PreTrainedConfig, directory: Path) -> tuple[str, ...]:
    """The config fields ``model.dropout`` sets: the family's (_DROPOUT_FIELDS), or for another
    architecture its rate fields by the names Transformers configs give them (*dropout*,
    *_pdrop*: BLOOM's hidden_dropout, GPT-Neo's embed_dropout, ...)."""
    fields = _DROPOUT_FIELDS.get(config.model_type)
    if fields is None:
        fields = tuple(
            name
            for name, value in config.to_dict().items()
            if ("dropout" in name or name.endswith("_pdrop")) and isinstance(value, float)
        )
    if not fields:
        raise UserError(
            f"model.dropout: {directory} is a {config.model_type} model, which has no dropout "
            "rate in its config; leave model.dropout unset"
        )
    return fields


def _load_tokenizer(directory: Path, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    if not any(
        (directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")
    ):
        raise UserError(
            f"{directory} has no tokenizer (tokenizer.json / tokenizer_config.json); "
            "save the tokenizer next to the model"
        )
    try:
        return AutoTokenizer.from_pretrained(
            directory, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise _remote_code_or(exc, directory, trust_remote_code) from None


def _load_with_adapter(
    directory: Path,
    objective: str | None,
    allow_pickle: bool,
    trust_remote_code: bool,
    dtype: str | torch.dtype | None,
    dropout: float | None,
) -> tuple[peft.PeftModel, PreTrainedTokenizerBase]:
    """Base model (from adapter_config.json's base_model_name_or_path) + the LoRA adapter."""
    adapter_config = directory / ADAPTER_CONFIG
    try:
        base = json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise UserError(f"{adapter_config}: not a JSON object ({_one_line(exc)})") from None
    if not base:
        raise UserError(f"{adapter_config}: base_model_name_or_path is empty; the base is unknown")
    base_path = Path(base).expanduser()
    if not base_path.is_absolute() and (directory / base_path).is_dir():
        base = str(directory / base_path)  # recorded relative to the adapter directory
    _check_weights(directory, allow_pickle, stem="adapter_model")
    base_model, tokenizer = load_pretrained(
        base,
        objective=objective,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        dtype=dtype,
        dropout=dropout,
    )
    model = peft.PeftModel.from_pretrained(base_model, str(directory))
    if any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = _load_tokenizer(directory, trust_remote_code)
    return model, tokenizer


def _torch_dtype(dtype: str | torch.dtype) -> str | torch.dtype:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise UserError(f"dtype {dtype!r}: expected auto, float32, bfloat16 or float16")
    return value


def _remote_code_or(exc: Exception, where: Path, trust_remote_code: bool) -> UserError:
    message = f"{where}: {_one_line(exc)}"
    if "trust_remote_code" in str(exc) and not trust_remote_code:
        return UserError(
            f"{where}: this model needs its own Python code from the checkpoint; if you trust it "
            "set model.trust_remote_code: true (CLI: --trust-remote-code)"
        )
    return UserError(message)


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (UserErrors print as one line)."""
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------- LoRA


def apply_lora(model: PreTrainedModel | peft.PeftModel, cfg: LoraConfig) -> peft.PeftModel:
    """Wrap ``model`` with fresh LoRA adapters (PEFT); only the adapters stay trainable.

    ``cfg.target_modules`` None uses the architecture's default (see default_lora_targets).
    A model that already carries an adapter (loaded from an adapter directory) keeps it, with
    its own r/alpha/targets, and that adapter becomes trainable again.
    """
    if isinstance(model, peft.PeftModel):
        model.set_requires_grad(model.active_adapter, requires_grad=True)
        return model
    targets: list[str] | str = cfg.target_modules or default_lora_targets(model)
    names = {targets} if isinstance(targets, str) else set(targets)
    # GPT-2 style Conv1D layers store the weight as (in, out): LoRA must know to transpose.
    fan_in_fan_out = any(
        isinstance(module, Conv1D) and name.rsplit(".", 1)[-1] in names
        for name, module in model.named_modules()
    )
    lora = peft.LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out,
        task_type=_PEFT_TASK[model_kind(model)],
    )
    try:
        return peft.get_peft_model(model, lora)
    except ValueError as exc:
        raise UserError(f"model.lora.target_modules {targets}: {_one_line(exc)}") from None


def default_lora_targets(model: nn.Module) -> list[str] | str:
    """PEFT's own default for the model type (T5: q,v; BERT: query,value; GPT-2: c_attn;
    Llama/Qwen: q_proj,v_proj, after Hu et al. 2021), else attention projections by name."""
    base = _unwrap(model)
    known = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(base.config.model_type)
    if known is not None:
        return known if isinstance(known, str) else list(known)
    linear = {
        name.rsplit(".", 1)[-1]
        for name, module in base.named_modules()
        if isinstance(module, (nn.Linear, Conv1D))
    }
    for candidate in _FALLBACK_LORA_TARGETS:
        if set(candidate) <= linear:
            return list(candidate)
    raise UserError(
        f"no default LoRA target modules for model type {base.config.model_type}; set "
        f"model.lora.target_modules to some of its linear layers: {', '.join(sorted(linear))}"
    )


def save_adapter(
    model: peft.PeftModel,
    out_dir: str | Path,
    *,
    base_model: str | Path | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the adapter alone (adapter_model.safetensors + adapter_config.json, plus the
    tokenizer if given), atomically. adapter_config.json records the base model's path or Hub
    id: ``base_model`` if given, else where the base was loaded from."""
    config = model.peft_config[model.active_adapter]
    if base_model is not None:
        local = Path(base_model).expanduser()
        config.base_model_name_or_path = str(local.resolve()) if local.exists() else str(base_model)
    if not config.base_model_name_or_path:
        raise ValueError("the base model was built in memory: save it first and pass base_model=")
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        # save_embedding_layers=False: lmforge never resizes embeddings, and PEFT's "auto"
        # would look the base model up on the Hub to find out.
        model.save_pretrained(str(tmp), save_embedding_layers=False)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def merge_and_export(
    adapter_dir: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> Path:
    """Fold the LoRA adapter in ``adapter_dir`` into its base model and write a plain
    Transformers directory (safetensors, config, tokenizer) at ``out_dir``, atomically."""
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not adapter_dir.is_dir():
        raise UserError(f"model directory {adapter_dir} does not exist")
    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        raise UserError(
            f"{adapter_dir} has no {ADAPTER_CONFIG}: it is not a LoRA adapter directory, so "
            "there is nothing to merge"
        )
    refuse_to_overwrite(out_dir, overwrite)
    if out_dir.resolve() == adapter_dir.resolve():
        raise UserError(f"--out {out_dir} is the adapter directory itself; choose another")
    model, tokenizer = load_pretrained(
        adapter_dir, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
    )
    merged = model.merge_and_unload()
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir
