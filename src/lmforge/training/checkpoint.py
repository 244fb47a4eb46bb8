"""Checkpoints: atomic, resumable, each a plain Transformers model directory.

Layout of ``run_dir/checkpoints/step-000123/``::

    model.safetensors, config.json  the model (save_pretrained; a PEFT model saves its adapter)
    tokenizer files                 tokenizer.save_pretrained
    config.yaml                     the run's resolved config, when given
    training_state/                 Accelerate's save_state: optimizer, scheduler, grad scaler,
                                    Python/NumPy/torch RNG states of every process; plus
                                    state.json: step, epoch, data position, best metric, tokens...
    checkpoint_complete.json        written last: its presence marks a complete checkpoint

A checkpoint is written into ``.step-000123.tmp`` (a name every process agrees on), every
file fsync'ed, the marker written, then the directory renamed into place. A kill at any moment
leaves either the previous set of checkpoints or the new complete one; leftovers are removed
at the next start. Model weights are kept out of Accelerate's state (they are already in
Transformers format next to it), except under FSDP/DeepSpeed, whose engines save sharded
weights themselves.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import load_file
from transformers.utils import logging as hf_logging

from lmforge.fsutil import atomic_dir, fsync_dir, write_json_atomic, write_text_atomic

CHECKPOINTS_DIR = "checkpoints"
TRAINING_STATE = "training_state"
STATE_FILE = "state.json"
COMPLETE_MARKER = "checkpoint_complete.json"
FINAL_DIR = "final"
BEST_LINK = "best"
_STEP_DIR = re.compile(r"^step-(\d+)$")
SHARDED_ENGINES = (DistributedType.FSDP, DistributedType.DEEPSPEED)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS_DIR / f"step-{step:06d}"


def step_of(checkpoint: Path) -> int:
    match = _STEP_DIR.match(checkpoint.name)
    if match is None:
        raise ValueError(f"{checkpoint} is not a step-NNNNNN checkpoint directory")
    return int(match.group(1))


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run (marker present), oldest first."""
    root = run_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and _STEP_DIR.match(p.name) and (p / COMPLETE_MARKER).is_file()
    ]
    return sorted(found, key=step_of)


def remove_incomplete(run_dir: Path) -> list[Path]:
    """Delete what a killed save or prune left behind (temp dirs, dirs without a marker)."""
    root = run_dir / CHECKPOINTS_DIR
    leftovers = [*run_dir.glob(f".{FINAL_DIR}.*")]  # an interrupted write of final/
    if root.is_dir():
        leftovers += [
            path
            for path in root.iterdir()
            if path.name.startswith(".")
            or (_STEP_DIR.match(path.name) and not (path / COMPLETE_MARKER).is_file())
        ]
    removed = [path for path in leftovers if path.is_dir()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for path in [directory, *(p for p in directory.rglob("*") if p.is_dir())]:
        fsync_dir(path)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence save_pretrained's per-shard tqdm bar, which would tear the rich progress bar."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def keep_weights_out_of_accelerate_state(accelerator: Accelerator) -> None:
    """Make save_state/load_state skip plain model weights: we keep those in Transformers format."""

    def drop_weights(models: list[Any], weights: list[Any], output_dir: str) -> None:
        weights.clear()

    def skip_models(models: list[Any], input_dir: str) -> None:
        models.clear()

    accelerator.register_save_state_pre_hook(drop_weights)
    accelerator.register_load_state_pre_hook(skip_models)


def _gathered_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict | None:
    """The full state dict under FSDP/DeepSpeed (a collective); None lets save_pretrained read it."""
    if accelerator.distributed_type in SHARDED_ENGINES:
        return accelerator.get_state_dict(model)
    return None


def write_model_dir(
    directory: Path,
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    config_yaml: str | None = None,
) -> None:
    """save_pretrained the (unwrapped) model and tokenizer into ``directory``, plus config.yaml."""
    with _quiet_transformers():
        model.save_pretrained(str(directory), state_dict=state_dict)  # type: ignore[operator]
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))
    if config_yaml is not None:
        write_text_atomic(directory / "config.yaml", config_yaml)


def save_checkpoint(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    run_dir: Path,
    step: int,
    state: dict[str, Any],
    config_yaml: str | None,
) -> Path:
    """Write checkpoint ``step`` atomically; every process must call this (collective saves)."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / TRAINING_STATE))
    state_dict = _gathered_state_dict(accelerator, model)
    if accelerator.is_main_process:
        write_model_dir(
            tmp,
            accelerator.unwrap_model(model, keep_torch_compile=False),
            tokenizer,
            state_dict=state_dict,
            config_yaml=config_yaml,
        )
        write_json_atomic(tmp / TRAINING_STATE / STATE_FILE, state)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _fsync_tree(tmp)
        write_json_atomic(tmp / COMPLETE_MARKER, {"step": step})
        os.replace(tmp, final)
        fsync_dir(final.parent)
    accelerator.wait_for_everyone()
    return final


def _load_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    """Copy a checkpoint's Transformers-format weights into ``model`` in place."""
    if hasattr(model, "get_base_model"):  # PEFT: the checkpoint holds the adapter only
        from peft import set_peft_model_state_dict

        adapter = load_file(checkpoint / "adapter_model.safetensors")
        result = set_peft_model_state_dict(model, adapter)
        if result.unexpected_keys:
            raise RuntimeError(
                f"{checkpoint}: adapter keys not in the model: {result.unexpected_keys[:5]}"
            )
        return
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(checkpoint.glob("model*.safetensors")):
        weights.update(load_file(shard))
    result = model.load_state_dict(weights, strict=False)
    # save_pretrained writes a tied tensor (lm_head tied to the embeddings) once, under one name
    current = model.state_dict()
    loaded = {current[name].data_ptr() for name in weights if name in current}
    untied_missing = [n for n in result.missing_keys if current[n].data_ptr() not in loaded]
    if result.unexpected_keys or untied_missing:
        raise RuntimeError(
            f"{checkpoint}: weights do not match the model "
            f"(unexpected {result.unexpected_keys[:5]}, missing {untied_missing[:5]})"
        )


def load_checkpoint(
    accelerator: Accelerator, model: torch.nn.Module, checkpoint: Path
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG states; return the saved state.json."""
    if accelerator.distributed_type not in SHARDED_ENGINES:
        _load_weights(accelerator.unwrap_model(model, keep_torch_compile=False), checkpoint)
    accelerator.load_state(str(checkpoint / TRAINING_STATE))
    return json.loads((checkpoint / TRAINING_STATE / STATE_FILE).read_text(encoding="utf-8"))


def prune_checkpoints(run_dir: Path, keep_last: int, keep: Path | None) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints and ``keep`` (the best)."""
    checkpoints = complete_checkpoints(run_dir)
    kept = set(checkpoints[-keep_last:]) | ({keep} if keep is not None else set())
    removed = []
    for path in checkpoints:
        if path not in kept:
            # hide it first, so a kill mid-delete cannot leave a half checkpoint that looks whole
            hidden = path.with_name(f".{path.name}.deleting")
            os.replace(path, hidden)
            shutil.rmtree(hidden, ignore_errors=True)
            removed.append(path)
    return removed


def point_best(run_dir: Path, checkpoint: Path) -> None:
    """Atomically make ``run_dir/best`` a relative symlink to ``checkpoint``."""
    link = run_dir / BEST_LINK
    tmp = run_dir / f".{BEST_LINK}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(checkpoint.relative_to(run_dir))
    os.replace(tmp, link)
    fsync_dir(run_dir)


def save_final(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    run_dir: Path,
    config_yaml: str | None,
) -> Path:
    """Write ``run_dir/final``: a plain Transformers model directory (LoRA merged) + tokenizer."""
    state_dict = _gathered_state_dict(accelerator, model)
    final = run_dir / FINAL_DIR
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
        if hasattr(unwrapped, "merge_and_unload"):  # PEFT: fold the adapter into the weights
            unwrapped, state_dict = copy.deepcopy(unwrapped).merge_and_unload(), None
        # overwrite: a rerun of a finished run rewrites its own final/ (same weights)
        with atomic_dir(final, overwrite=True) as tmp:
            write_model_dir(
                tmp, unwrapped, tokenizer, state_dict=state_dict, config_yaml=config_yaml
            )
    accelerator.wait_for_everyone()
    return final
