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

Inference (evaluation) costs 2N FLOPs per token a stack reads (Kaplan et al. 2020, table 1:
the forward pass alone); prompt tokens pass through an encoder-decoder's encoder, generated
tokens through its decoder. The attention term is left out there: it depends on each
position's context, which the token counts of a backend do not keep.

Energy is an estimate, not a measurement: power draw (W per device) x devices x wall time,
and CO2 is that energy times the grid's carbon intensity (gCO2e/kWh). Both numbers are
configurable (run config, else LMFORGE_POWER_WATTS / LMFORGE_GRID_GCO2_PER_KWH, else the
defaults below, whose sources are stated) and every report names where its numbers came
from. Measuring instead (RAPL counters, NVML, CodeCarbon) needs privileges, a GPU library or
a package lmforge does not depend on; a stated multiplication is reproducible everywhere.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.errors import UserError
from lmforge.fsutil import write_json_atomic

FLOPS_FORMULA = (
    "per token: 4N + 2N_trainable + 12*n_layer*d_attn*seq_len "
    "(= 6N + 12LHQT, PaLM appendix B, when all weights train)"
)
INFERENCE_FLOPS_FORMULA = (
    "per token: 2N (forward only; Kaplan et al. 2020, table 1), N the matmul parameters of "
    "the stack the token passes (encoder for prompt tokens, decoder for generated ones)"
)
ENERGY_FORMULA = (
    "energy_kwh = power_watts x devices x wall_seconds / 3.6e6; "
    "co2_g = energy_kwh x grid_gco2_per_kwh"
)
PEAK_CACHE = "peak_flops.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
POWER_ENV = "LMFORGE_POWER_WATTS"
GRID_ENV = "LMFORGE_GRID_GCO2_PER_KWH"
# Power draw per device while training, by torch device type: (watts, where the number is from).
DEFAULT_POWER_WATTS: dict[str, tuple[float, str]] = {
    "cpu": (
        28.0,
        "default: a typical laptop CPU package under sustained load (Intel Core i7-1165G7, "
        "configurable TDP-up 28 W, Intel ARK)",
    ),
    "cuda": (
        300.0,
        "default: GPU board power of an NVIDIA A100 80GB PCIe (max TDP 300 W, NVIDIA A100 "
        "datasheet)",
    ),
}
DEFAULT_GRID_GCO2_PER_KWH = (
    481.0,
    "default: world average carbon intensity of electricity generation in 2023, lifecycle "
    "gCO2e/kWh (Ember, Global Electricity Review 2024)",
)


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
        cached = {"device": name, "device_type": device.type, "flops_per_s": measured}
        write_json_atomic(path, cached)
    return {**cached, "device_type": device.type}


@dataclass(frozen=True)
class EnergySettings:
    """Power draw per device and grid carbon intensity, each with where it came from."""

    power_watts: float
    power_source: str
    grid_gco2_per_kwh: float
    grid_source: str


def _setting(
    value: float | None, field: str, env: str, default: tuple[float, str], *, zero_ok: bool
) -> tuple[float, str]:
    """(value, source): the run config's value, else the environment variable, else the default."""
    if value is not None:
        raw, source = str(value), f"run config ({field})"
    else:
        raw, source = os.environ.get(env, "").strip(), f"environment ({env})"
        if not raw:
            return default
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok):
        where = field if value is not None else env
        bound = ">= 0" if zero_ok else "> 0"
        raise UserError(f"{where}={raw!r}: expected a number {bound}, for example {default[0]:g}")
    return number, source


def energy_settings(
    device_type: str,
    power_watts: float | None = None,
    grid_gco2_per_kwh: float | None = None,
) -> EnergySettings:
    """The power and grid figures for a run on ``device_type`` (torch's: cpu, cuda, ...).

    ``power_watts`` / ``grid_gco2_per_kwh`` come from the run config (None: not set there);
    then LMFORGE_POWER_WATTS / LMFORGE_GRID_GCO2_PER_KWH; then the stated defaults. Resolve
    them before a long run starts, so that a bad environment value fails at once.
    """
    default_power = DEFAULT_POWER_WATTS.get(device_type)
    if default_power is None:
        watts, source = DEFAULT_POWER_WATTS["cpu"]
        default_power = (watts, f"no default for device type {device_type}; CPU {source}")
    watts, power_source = _setting(
        power_watts, "energy.power_watts", POWER_ENV, default_power, zero_ok=False
    )
    grid, grid_source = _setting(
        grid_gco2_per_kwh,
        "energy.grid_gco2_per_kwh",
        GRID_ENV,
        DEFAULT_GRID_GCO2_PER_KWH,
        zero_ok=True,
    )
    return EnergySettings(watts, power_source, grid, grid_source)


def energy_estimate(seconds: float, devices: int, settings: EnergySettings) -> dict[str, Any]:
    """Energy (kWh) and emissions (gCO2e) of ``devices`` drawing the set power for ``seconds``."""
    energy_kwh = settings.power_watts * devices * seconds / 3.6e6
    return {
        "power_watts_per_device": settings.power_watts,
        "power_source": settings.power_source,
        "devices": devices,
        "seconds": round(seconds, 3),
        "energy_kwh": energy_kwh,
        "grid_gco2_per_kwh": settings.grid_gco2_per_kwh,
        "grid_source": settings.grid_source,
        "co2_g": energy_kwh * settings.grid_gco2_per_kwh,
        "formula": ENERGY_FORMULA,
    }


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
    energy: EnergySettings | None = None,
) -> dict[str, Any]:
    """The contents of ``compute.json``: what the run processed, how long, how efficiently,
    and an energy and CO2 estimate over the wall time (``energy`` None: the environment's or
    the default figures for the peak's device type)."""
    per_device = peak["flops_per_s"].get(precision) or peak["flops_per_s"]["fp32"]
    energy = energy or energy_settings(peak["device_type"])
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
        "energy": energy_estimate(wall_seconds, num_processes, energy),
    }


def inference_compute(
    model: nn.Module | None,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    seconds: float,
    power_watts: float | None = None,
    grid_gco2_per_kwh: float | None = None,
) -> dict[str, Any]:
    """Tokens, wall time, forward FLOPs and energy of generating with a local ``model``
    (``power_watts`` / ``grid_gco2_per_kwh``: the config's values, as for
    :func:`energy_settings`).

    ``model`` None is a remote endpoint: its size and hardware are unknown, so only tokens
    and time are reported."""
    report: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "tokens": prompt_tokens + completion_tokens,
        "wall_seconds": round(seconds, 3),
        "flops": None,
        "flops_formula": INFERENCE_FLOPS_FORMULA,
        "energy": None,
    }
    if model is None:
        return report
    counter = FlopsCounter.from_model(model)
    if counter.n_decoder_layer:  # encoder-decoder: prompts read by the encoder only
        decoder = counter.matmul_params - counter.encoder_matmul_params
        flops = 2 * (counter.encoder_matmul_params * prompt_tokens + decoder * completion_tokens)
    else:
        flops = 2 * counter.matmul_params * (prompt_tokens + completion_tokens)
    device = next(model.parameters()).device
    energy = energy_settings(device.type, power_watts, grid_gco2_per_kwh)
    return {
        **report,
        "flops": float(flops),
        "matmul_params": counter.matmul_params,
        "device": device_name(device),
        "energy": energy_estimate(seconds, 1, energy),
    }
