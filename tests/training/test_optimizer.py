"""The loop's AdamW: lmforge's parameter groups, fused where torch has the kernel."""

from __future__ import annotations

import torch

from lmforge.config import OptimConfig
from lmforge.training.loop import adamw


def test_adamw_is_fused_on_cpu_with_decay_only_on_matrices() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optimizer = adamw(model, OptimConfig(weight_decay=0.1, lr=0.01), torch.device("cpu"))
    assert optimizer.defaults["fused"] is True
    decay, no_decay = optimizer.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 3  # linear bias, norm weight and bias


def test_adamw_unfused_on_a_device_without_the_kernel() -> None:
    model = torch.nn.Linear(2, 2)
    assert adamw(model, OptimConfig(), torch.device("meta")).defaults["fused"] is False
