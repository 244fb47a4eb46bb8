"""The Python API: a model and its tokenizer in one object.

    from lmforge import LM
    lm = LM.from_pretrained("runs/pretrain/final")
    lm.fit("train.jsonl", "valid.jsonl", task="summarize", max_steps=500)
    print(lm.generate("A long article ..."))
    lm.save("my-model")

``fit`` writes a normal run directory (config, metrics, checkpoints, ``final/``) through the
same code path as ``lmforge finetune``, so everything the CLI can do with a run works here.
"""

from __future__ import annotations

import difflib
import shutil
import time
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmforge.config import (
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    RunConfig,
    SplitConfig,
    TaskName,
    TemplateConfig,
    TrainConfig,
    validate,
)
from lmforge.data.templates import render_source
from lmforge.errors import UserError
from lmforge.fsutil import atomic_dir
from lmforge.generation import DecodingSettings, generate_texts
from lmforge.models import build_model, load_pretrained
from lmforge.runs import INPUTS, MODEL_CARD, read_model_card, run_training
from lmforge.training.loop import TrainResult

Data = str | Path | list[dict[str, Any]] | datasets.Dataset
_SECTIONS: dict[str, type] = {
    "train": TrainConfig,
    "optim": OptimConfig,
    "objective": ObjectiveConfig,
}


class LM:
    """A Hugging Face model + tokenizer, with the task template it answers in."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        task: TaskName = "text",
        template: TemplateConfig | None = None,
        max_source_length: int = 512,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.template = template or TemplateConfig()
        self.max_source_length = max_source_length
        self.last_run: TrainResult | None = None

    # ------------------------------------------------------------------ making one

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
    ) -> LM:
        """Load a model directory (lmforge's or any compatible HF checkpoint in the local cache);
        the task template lmforge fine-tuned it with comes along."""
        model, tokenizer = load_pretrained(
            name_or_path, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
        )
        card = read_model_card(name_or_path) if Path(name_or_path).is_dir() else {}
        first = (card.get("tasks") or [{}])[0]
        return cls(
            model,
            tokenizer,
            task=first.get("task", "text"),
            template=TemplateConfig(**first.get("template", {})),
            max_source_length=card.get("max_source_length", 512),
        )

    @classmethod
    def new(
        cls,
        tokenizer: PreTrainedTokenizerBase | str | Path,
        *,
        family: str = "t5",
        preset: str = "tiny",
        objective: str | None = None,
        seed: int = 42,
    ) -> LM:
        """A freshly initialised model of ``family``/``preset`` sized to ``tokenizer``."""
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            from lmforge.tokenizers import load_tokenizer

            tokenizer = load_tokenizer(tokenizer)
        cfg = validate(ModelConfig, {"family": family, "preset": preset}, "LM.new")
        default = {"t5": "seq2seq_sft", "bert": "mlm_nsp"}.get(family, "causal_sft")
        return cls(build_model(cfg, tokenizer, objective or default, seed=seed), tokenizer)

    # ------------------------------------------------------------------ training

    def fit(
        self,
        train: Data,
        eval: Data | None = None,  # noqa: A002 - the name users expect
        *,
        task: TaskName | None = None,
        columns: dict[str, str] | None = None,
        template: TemplateConfig | dict[str, Any] | None = None,
        run_dir: str | Path | None = None,
        seed: int = 42,
        lora: bool | dict[str, Any] = False,
        **settings: Any,
    ) -> TrainResult:
        """Fine-tune on ``train`` (a file path, a list of dicts or a ``datasets.Dataset``),
        evaluating on ``eval``. ``settings`` are keys of the config's train, optim and objective
        sections (``max_steps=200, lr=3e-4, batch_size=8``). The run is written to ``run_dir``
        (default ``runs/fit-<time>``); the model is trained in place."""
        task = task or (self.task if self.task != "text" else "summarize")
        run_dir = Path(run_dir or f"runs/fit-{time.strftime('%Y%m%d-%H%M%S')}")
        template_cfg = (
            template
            if isinstance(template, TemplateConfig)
            else validate(TemplateConfig, template or {}, "fit(template=...)")
        )
        no_split = SplitConfig(validation=0.0, test=0.0)
        source = {
            "task": task,
            "columns": columns or {},
            "template": template_cfg,
            "split": no_split,
        }
        raw: dict[str, Any] = {
            "run_dir": str(run_dir),
            "seed": seed,
            "data": [{**source, "path": _as_path(train, run_dir, "train")}],
            "validation": [{**source, "path": _as_path(eval, run_dir, "eval")}]
            if eval is not None
            else [],
            "model": {"lora": lora if isinstance(lora, dict) else {"enabled": bool(lora)}},
        }
        for key, value in settings.items():
            raw.setdefault(_section_of(key), {})[key] = value
        cfg = validate(RunConfig, raw, "fit()")
        stage = "pretrain" if task == "text" else "finetune"
        result = run_training(cfg, stage, model=self.model, tokenizer=self.tokenizer)
        # LoRA layers are injected into self.model's modules in place: nothing to swap back.
        self.task, self.template = task, template_cfg
        self.max_source_length = cfg.objective.max_source_length
        self.last_run = result
        return result

    # ------------------------------------------------------------------ using it

    def generate(
        self,
        text: str | dict[str, Any] | list[str | dict[str, Any]],
        *,
        batch_size: int = 16,
        **decoding: Any,
    ) -> str | list[str]:
        """Answer one input or a list. A string is the template's main field (the document to
        summarize, the code to comment); a dict gives every field of the task's row.
        ``decoding``: max_new_tokens, num_beams, do_sample, temperature, top_k, top_p,
        repetition_penalty, no_repeat_ngram_size, length_penalty, seed."""
        single = not isinstance(text, list)
        items = [text] if single else list(text)
        sources = [self._render(item) for item in items]
        try:
            settings = DecodingSettings(**decoding)
        except TypeError as exc:
            raise UserError(f"generate(): {exc}") from None
        outputs = generate_texts(
            self.model,
            self.tokenizer,
            sources,
            settings,
            batch_size=batch_size,
            max_source_length=self.max_source_length,
        )
        return outputs[0] if single else outputs

    def _render(self, item: str | dict[str, Any]) -> str:
        if self.task == "text":
            return item if isinstance(item, str) else str(item.get("text", ""))
        from lmforge.data.templates import task_fields

        row = item if isinstance(item, dict) else {task_fields(self.task).source[0]: item}
        return render_source(self.task, row, self.template)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write a plain Transformers model directory (safetensors) + tokenizer + task card."""
        path = Path(path)
        with atomic_dir(path, overwrite=overwrite) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            if self.last_run is not None and (self.last_run.final_dir / MODEL_CARD).is_file():
                shutil.copy(self.last_run.final_dir / MODEL_CARD, tmp / MODEL_CARD)
        return path


def _section_of(key: str) -> str:
    for section, cls in _SECTIONS.items():
        if key in cls.model_fields:
            return section
    valid = [name for cls in _SECTIONS.values() for name in cls.model_fields]
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UserError(f"fit(): unknown setting {key!r}{hint}")


def _as_path(data: Data | None, run_dir: Path, name: str) -> str:
    """Files are used where they are; in-memory rows are saved into the run directory."""
    if isinstance(data, (str, Path)):
        return str(data)
    if isinstance(data, list):
        if not data or not all(isinstance(r, dict) for r in data):
            raise UserError(f"fit(): {name} data must be a non-empty list of dicts")
        data = datasets.Dataset.from_list(data)
    if not isinstance(data, datasets.Dataset):
        raise UserError(
            f"fit(): {name} data must be a path, a list of dicts or a datasets.Dataset, "
            f"got {type(data).__name__}"
        )
    target = run_dir / INPUTS / name
    if not target.exists():
        data.save_to_disk(str(target))
    return str(target)
