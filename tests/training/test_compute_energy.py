"""Energy and CO2 estimates (configured, environment, default) and inference FLOPs."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserError
from lmforge.training.compute import (
    GRID_ENV,
    POWER_ENV,
    FlopsCounter,
    compute_report,
    energy_estimate,
    energy_settings,
    inference_compute,
    peak_flops,
)


@pytest.fixture(autouse=True)
def no_energy_env(monkeypatch):
    monkeypatch.delenv(POWER_ENV, raising=False)
    monkeypatch.delenv(GRID_ENV, raising=False)


def test_defaults_per_device_type_state_their_sources():
    cpu, gpu, other = energy_settings("cpu"), energy_settings("cuda"), energy_settings("mps")
    assert (cpu.power_watts, gpu.power_watts, other.power_watts) == (28.0, 300.0, 28.0)
    assert "laptop CPU" in cpu.power_source and "Intel ARK" in cpu.power_source
    assert "A100" in gpu.power_source and "datasheet" in gpu.power_source
    assert "no default for device type mps" in other.power_source
    assert cpu.grid_gco2_per_kwh == 481.0
    assert "Ember" in cpu.grid_source and "2023" in cpu.grid_source


def test_the_run_config_beats_the_environment_which_beats_the_default(monkeypatch):
    monkeypatch.setenv(POWER_ENV, "45.5")
    monkeypatch.setenv(GRID_ENV, "120")
    from_env = energy_settings("cpu")
    assert (from_env.power_watts, from_env.grid_gco2_per_kwh) == (45.5, 120.0)
    assert from_env.power_source == f"environment ({POWER_ENV})"
    configured = energy_settings("cpu", power_watts=10, grid_gco2_per_kwh=0)
    assert (configured.power_watts, configured.grid_gco2_per_kwh) == (10.0, 0.0)
    assert configured.power_source == "run config (energy.power_watts)"
    assert configured.grid_source == "run config (energy.grid_gco2_per_kwh)"


@pytest.mark.parametrize(
    ("env", "value"), [(POWER_ENV, "abc"), (POWER_ENV, "0"), (POWER_ENV, "-5"), (GRID_ENV, "nan")]
)
def test_bad_environment_values_are_user_errors_naming_the_variable(monkeypatch, env, value):
    monkeypatch.setenv(env, value)
    with pytest.raises(UserError, match=f"^{env}='{value}': expected a number"):
        energy_settings("cpu")


def test_energy_is_power_times_devices_times_time():
    estimate = energy_estimate(3600.0, 2, energy_settings("cpu"))
    assert estimate["energy_kwh"] == pytest.approx(28 * 2 / 1000)  # two 28 W devices for 1 h
    assert estimate["co2_g"] == pytest.approx(0.056 * 481)
    assert estimate["devices"] == 2 and "3.6e6" in estimate["formula"]


def test_compute_json_estimates_energy_over_the_wall_time_of_all_processes(tiny):
    peak = {"device": "NVIDIA X", "device_type": "cuda", "flops_per_s": {"fp32": 1e12}}
    report = compute_report(
        counter=FlopsCounter.from_model(tiny["gpt2"]()),
        tokens=100,
        target_tokens=80,
        train_flops=1e9,
        wall_seconds=1800.0,
        step_seconds=1500.0,
        steps=10,
        precision="fp32",
        num_processes=4,
        peak=peak,
    )
    energy = report["energy"]
    assert energy["power_watts_per_device"] == 300.0 and energy["devices"] == 4
    assert energy["energy_kwh"] == pytest.approx(300 * 4 * 0.5 / 1000)
    assert energy["co2_g"] == pytest.approx(energy["energy_kwh"] * 481)


def test_peak_flops_says_which_kind_of_device_it_measured(tmp_path, monkeypatch):
    from lmforge.training import compute

    monkeypatch.setattr(compute, "measure_matmul_peak", lambda device, dtype: 1e9)
    assert peak_flops(tmp_path, torch.device("cpu"), "fp32")["device_type"] == "cpu"


def test_inference_flops_are_2n_per_token_through_the_stack_that_reads_it(tiny):
    gpt2 = tiny["gpt2"]()
    n = FlopsCounter.from_model(gpt2).matmul_params
    causal = inference_compute(gpt2, prompt_tokens=30, completion_tokens=10, seconds=2.0)
    assert causal["flops"] == 2 * n * 40 and causal["tokens"] == 40
    assert causal["energy"]["energy_kwh"] == pytest.approx(28 * 2.0 / 3.6e6)
    configured = inference_compute(
        gpt2, prompt_tokens=1, completion_tokens=1, seconds=3600.0, power_watts=100.0
    )
    assert configured["energy"]["energy_kwh"] == pytest.approx(0.1)
    t5 = tiny["t5"]()
    counter = FlopsCounter.from_model(t5)
    seq2seq = inference_compute(t5, prompt_tokens=30, completion_tokens=10, seconds=1.0)
    n_enc, n_dec = (
        counter.encoder_matmul_params,
        counter.matmul_params - counter.encoder_matmul_params,
    )
    assert seq2seq["flops"] == 2 * (n_enc * 30 + n_dec * 10)
    remote = inference_compute(None, prompt_tokens=30, completion_tokens=10, seconds=1.0)
    assert remote["flops"] is None and remote["energy"] is None and remote["tokens"] == 40
