"""What a run cost: tokens, wall time, training FLOPs and model FLOPs utilisation (MFU).

FLOPs per trained token follow PaLM (Chowdhery et al. 2022, appendix B), which refines
Kaplan et al. 2020 (table 1, C = 6N + 6 n_layer n_ctx d_attn):

    6N + 12 * n_layer * d_attn * seq_len

6N is the weight matmuls (2N forward, 2N for activation gradients, 2N for weight gradients)
and the second term the attention score and value matmuls (QK^T and AV: 4 * d_attn * seq_len
per layer forward, twice that backward). N counts only parameters used in matmuls: embedding
lookups are excluded, a tied output projection is included. When weights are frozen (LoRA)
their weight gradients are not computed, so 6N becomes 4N + 2N_trainable. An encoder-decoder
model is counted per stack: encoder tokens pass through the encoder's weights and attend over
the source; decoder tokens pass through the decoder's weights and attend over the target
(self-attention) and the source (cross-attention).

MFU is achieved FLOPs/s divided by the peak of the hardware, measured here by timing large
matmuls (so it is the peak this machine actually reaches, not a datasheet number).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.fsutil import write_json_atomic

FLOPS_FORMULA = (
    "per token: 4N + 2N_trainable + 12*n_layer*d_attn*seq_len "
    "(= 6N + 12LHQT, PaLM appendix B, when all weights train)"
)
PEAK_CACHE = "peak_flops.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _matmul_params(module: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameters used in matmuls: no embedding lookups, tied output head in."""
    lookups = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    total = trainable = 0
    for param in module.parameters():  # parameters() yields a shared tensor once
        if id(param) in lookups:
            continue
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    output = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    if output is not None and id(output.weight) in lookups:
        total += output.weight.numel()
        trainable += output.weight.numel() if output.weight.requires_grad else 0
    return total, trainable


def _config_int(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"{type(config).__name__} has none of {names}")


@dataclass(frozen=True)
class FlopsCounter:
    """Training FLOPs of a batch, from the model's parameter counts and the batch's shapes."""

    params: int
    matmul_params: int
    trainable_matmul_params: int
    n_layer: int
    d_attn: int
    # encoder-decoder models only: the encoder's share and the decoder's depth
    encoder_matmul_params: int = 0
    encoder_trainable_matmul_params: int = 0
    n_decoder_layer: int = 0

    @classmethod
    def from_model(cls, model: nn.Module) -> FlopsCounter:
        if hasattr(model, "get_base_model"):  # a PEFT model: count the wrapped model
            model = model.get_base_model()  # type: ignore[operator]
        config = model.config  # type: ignore[union-attr]
        n_layer = _config_int(config, "num_hidden_layers", "num_layers", "n_layer")
        heads = getattr(config, "num_heads", None)
        d_kv = getattr(config, "d_kv", None)  # T5: attention width = num_heads * d_kv
        d_attn = heads * d_kv if heads and d_kv else _config_int(config, "hidden_size", "n_embd")
        total, trainable = _matmul_params(model)
        counter = cls(
            params=sum(p.numel() for p in model.parameters()),
            matmul_params=total,
            trainable_matmul_params=trainable,
            n_layer=n_layer,
            d_attn=d_attn,
        )
        if getattr(config, "is_encoder_decoder", False):
            enc_total, enc_trainable = _matmul_params(model.get_encoder())  # type: ignore[operator]
            counter = replace(
                counter,
                encoder_matmul_params=enc_total,
                encoder_trainable_matmul_params=enc_trainable,
                n_decoder_layer=getattr(config, "num_decoder_layers", None) or n_layer,
            )
        return counter

    def _per_token(self, n: int, n_trainable: int, n_layer: int, context: int) -> int:
        return 4 * n + 2 * n_trainable + 12 * n_layer * self.d_attn * context

    def batch_flops(self, batch: dict[str, torch.Tensor]) -> int:
        """FLOPs to train on ``batch`` (forward and backward), counting non-pad tokens only."""
        input_ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        tokens = int(mask.sum()) if mask is not None else input_ids.numel()
        seq_len = input_ids.shape[1]
        if not self.n_decoder_layer:
            per_token = self._per_token(
                self.matmul_params, self.trainable_matmul_params, self.n_layer, seq_len
            )
            return tokens * per_token
        labels = batch["labels"]
        target_tokens = int((labels != -100).sum())
        encoder = self._per_token(
            self.encoder_matmul_params, self.encoder_trainable_matmul_params, self.n_layer, seq_len
        )
        decoder = self._per_token(
            self.matmul_params - self.encoder_matmul_params,
            self.trainable_matmul_params - self.encoder_trainable_matmul_params,
            self.n_decoder_layer,
            labels.shape[1] + seq_len,
        )
        return tokens * encoder + target_tokens * decoder


def device_name(device: torch.device) -> str:
    """A human-readable name of the device the peak was measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _best_matmul_seconds(
    device: torch.device, dtype: torch.dtype, size: int, repeats: int
) -> float:
    generator = torch.Generator(device=device).manual_seed(0)  # leaves the global RNG alone
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.matmul(a, b)  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def measure_matmul_peak(
    device: torch.device,
    dtype: torch.dtype,
    size: int = 2048,
    repeats: int = 3,
    budget_s: float = 1.0,
) -> float:
    """Best FLOP/s of ``repeats`` timed ``size``x``size`` matmuls (after one warm-up).

    A 256 probe first: where one full-size matmul would take over ``budget_s`` (bf16 on a CPU
    without bf16 instructions runs at ~0.1 GFLOP/s: minutes for 2048) the size is halved.
    """
    probe = 2 * 256**3 / _best_matmul_seconds(device, dtype, 256, 1)
    while size > 256 and 2 * size**3 / probe > budget_s:
        size //= 2
    return 2 * size**3 / _best_matmul_seconds(device, dtype, size, repeats)


def peak_flops(run_dir: Path, device: torch.device, precision: str) -> dict[str, Any]:
    """Measured matmul peak for fp32 (and the training precision), cached in the run directory."""
    path = run_dir / PEAK_CACHE
    name = device_name(device)
    cached: dict[str, Any] = {}
    if path.exists():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cached = {}
        if cached.get("device") != name:
            cached = {}
    wanted = {"fp32": torch.float32, precision: DTYPES[precision]}
    missing = [p for p in wanted if p not in cached.get("flops_per_s", {})]
    if missing:
        measured = dict(cached.get("flops_per_s", {}))
        for p in missing:
            measured[p] = measure_matmul_peak(device, wanted[p])
        cached = {"device": name, "flops_per_s": measured}
        write_json_atomic(path, cached)
    return cached


def compute_report(
    *,
    counter: FlopsCounter,
    tokens: int,
    target_tokens: int,
    train_flops: float,
    wall_seconds: float,
    step_seconds: float,
    steps: int,
    precision: str,
    num_processes: int,
    peak: dict[str, Any],
) -> dict[str, Any]:
    """The contents of ``compute.json``: what the run processed, how long, and how efficiently."""
    per_device = peak["flops_per_s"].get(precision) or peak["flops_per_s"]["fp32"]
    mfu = train_flops / (step_seconds * per_device * num_processes) if step_seconds > 0 else None
    return {
        "steps": steps,
        "tokens": tokens,
        "target_tokens": target_tokens,
        "wall_seconds": round(wall_seconds, 3),
        "train_step_seconds": round(step_seconds, 3),
        "train_flops": float(train_flops),
        "flops_formula": FLOPS_FORMULA,
        "params": counter.params,
        "matmul_params": counter.matmul_params,
        "trainable_matmul_params": counter.trainable_matmul_params,
        "precision": precision,
        "num_processes": num_processes,
        "device": peak["device"],
        "peak_flops_per_s_per_device": per_device,
        "mfu": mfu,
    }
