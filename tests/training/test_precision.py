"""Precision: bf16 only where the hardware does it natively."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserError
from lmforge.training import precision
from lmforge.training.precision import cpu_has_fast_bf16, resolve_precision

CPU = torch.device("cpu")


def test_cpu_flags(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    assert not cpu_has_fast_bf16(plain)
    assert cpu_has_fast_bf16(amx)
    assert not cpu_has_fast_bf16(tmp_path / "missing")


def test_auto_on_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"
    assert resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", CPU)


def test_bf16_autocast_run_on_cpu(tmp_path, tiny, one_thread):
    tiny["seed_peak_cache"](tmp_path, bf16=2e10)
    result = tiny["run"](tmp_path, max_steps=2, precision="bf16")
    assert result.compute["precision"] == "bf16"
    assert result.compute["peak_flops_per_s_per_device"] == 2e10
    assert result.compute["mfu"] > 0
