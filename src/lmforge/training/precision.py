"""Which numeric precision a run trains in, chosen from what the hardware does fast.

``auto`` picks bf16 autocast only where the hardware has native bf16 arithmetic: CUDA GPUs
that report bf16 support, and CPUs whose flags show ``avx512_bf16`` or ``amx_bf16`` (on other
CPUs bf16 is emulated and slower than fp32). Everything else trains in fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from lmforge.errors import UserError

Precision = Literal["fp32", "bf16", "fp16"]

# TrainConfig.precision -> Accelerator(mixed_precision=...)
ACCELERATE_MIXED_PRECISION: dict[str, str] = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}

CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_fast_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True if the CPU flags in ``cpuinfo`` include native bf16 instructions."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            if CPU_BF16_FLAGS & set(line.split(":", 1)[1].split()):
                return True
    return False


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """Turn ``train.precision`` (auto|fp32|bf16|fp16) into the precision used on ``device``."""
    cuda = device.type == "cuda"
    if requested == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if device.type == "cpu" and cpu_has_fast_bf16():
            return "bf16"
        return "fp32"
    if requested == "fp16" and not cuda:
        raise UserError(
            f"train.precision: fp16 needs a CUDA GPU, and this run is on {device.type}; "
            "use auto, bf16 or fp32"
        )
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"train.precision: bf16 is not supported by {torch.cuda.get_device_name(device)}; "
            "use auto, fp16 or fp32"
        )
    if requested not in ACCELERATE_MIXED_PRECISION:
        raise UserError(f"train.precision: {requested!r} is not one of auto, fp32, bf16, fp16")
    return requested  # type: ignore[return-value]
