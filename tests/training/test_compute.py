"""FLOPs accounting and the measured matmul peak."""

from __future__ import annotations

import torch

from lmforge.training import compute
from lmforge.training.compute import FlopsCounter, measure_matmul_peak, peak_flops


def test_decoder_flops_follow_the_palm_formula(tiny):
    model = tiny["gpt2"]()
    counter = FlopsCounter.from_model(model)
    assert (counter.n_layer, counter.d_attn) == (2, 32)
    total = sum(p.numel() for p in model.parameters())
    assert counter.matmul_params == total - 64 * 32  # minus position embeddings
    batch = {"input_ids": torch.zeros(2, 10, dtype=torch.long), "attention_mask": torch.ones(2, 10)}
    batch["attention_mask"][1, 6:] = 0  # 16 real tokens
    n = counter.matmul_params
    assert counter.batch_flops(batch) == 16 * (6 * n + 12 * 2 * 32 * 10)


def test_frozen_weights_skip_their_weight_gradients(tiny):
    model = tiny["gpt2"]()
    for name, param in model.named_parameters():
        param.requires_grad = "ln_f" in name
    counter = FlopsCounter.from_model(model)
    assert counter.trainable_matmul_params == 64  # ln_f weight and bias
    batch = {"input_ids": torch.zeros(1, 4, dtype=torch.long)}
    expected = 4 * (4 * counter.matmul_params + 2 * 64 + 12 * 2 * 32 * 4)
    assert counter.batch_flops(batch) == expected


def test_encoder_decoder_flops_count_each_stack(tiny):
    counter = FlopsCounter.from_model(tiny["t5"]())
    assert counter.d_attn == 4 * 8 and counter.n_decoder_layer == 2
    assert 0 < counter.encoder_matmul_params < counter.matmul_params
    batch = {
        "input_ids": torch.zeros(1, 6, dtype=torch.long),
        "labels": torch.tensor([[5, 6, -100]]),
    }
    n_enc = counter.encoder_matmul_params
    n_dec = counter.matmul_params - n_enc
    expected = 6 * (6 * n_enc + 12 * 2 * 32 * 6) + 2 * (6 * n_dec + 12 * 2 * 32 * (3 + 6))
    assert counter.batch_flops(batch) == expected


def test_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    assert measure_matmul_peak(torch.device("cpu"), torch.float32, size=128, repeats=2) > 1e6
    calls = []

    def fake(device, dtype, size=2048, repeats=3):
        calls.append(dtype)
        return 5e9

    monkeypatch.setattr(compute, "measure_matmul_peak", fake)
    first = peak_flops(tmp_path, torch.device("cpu"), "bf16")
    again = peak_flops(tmp_path, torch.device("cpu"), "bf16")
    assert first == again and first["flops_per_s"] == {"fp32": 5e9, "bf16": 5e9}
    assert calls == [torch.float32, torch.bfloat16]
    assert (tmp_path / "peak_flops.json").exists()
