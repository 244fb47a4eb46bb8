"""The loop's pieces and behaviour: schedule, loss, accumulation, heads, early stopping."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from lmforge.errors import UserError
from lmforge.training.loop import label_shift, loss_sums, lr_factor, param_groups, target_counts
from lmforge.training.sampler import epoch_batches


def _weights(run_dir):
    return load_file(run_dir / "final" / "model.safetensors")


def _train_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == "train"]


# --------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("cosine", 0, 0.25),  # warmup: (step + 1) / warmup_steps
        ("cosine", 3, 1.0),  # peak at the last warmup update
        ("cosine", 4, 1.0),  # decay starts at progress 0
        ("cosine", 9, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 10))),  # halfway: 0.55
        ("cosine", 14, 0.1),  # max_steps: the floor min_lr_ratio
        ("cosine", 20, 0.1),  # past the end it stays at the floor
        ("linear", 9, 0.1 + 0.9 * 0.5),
        ("linear", 12, 0.1 + 0.9 * 0.2),
        ("constant", 1, 0.5),
        ("constant", 13, 1.0),
    ],
)
def test_schedule_values(schedule, step, expected):
    got = lr_factor(step, warmup_steps=4, max_steps=14, schedule=schedule, min_lr_ratio=0.1)
    assert got == pytest.approx(expected, abs=1e-12)


def test_schedule_is_applied_to_the_optimizer(tmp_path, tiny, one_thread):
    tiny["run"](tmp_path, max_steps=6, optim={"warmup_steps": 2, "min_lr_ratio": 0.0})
    lrs = [r["lr"] for r in _train_rows(tmp_path)]
    expected = [
        1e-2 * lr_factor(s, warmup_steps=2, max_steps=6, schedule="cosine", min_lr_ratio=0.0)
        for s in range(6)
    ]
    assert lrs == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------- loss


def test_loss_sums_match_a_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[1, 2, 3, -100, -100], [4, 5, 6, 0, 1]])
    outputs = {"logits": logits}
    eps = 0.1
    lm, nsp = loss_sums(outputs, {"labels": labels}, shift=True, label_smoothing=eps)
    expected, count = 0.0, 0
    for b in range(2):
        for t in range(4):  # position t predicts label t + 1
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            logp = torch.log_softmax(logits[b, t].double(), -1)
            expected += -(1 - eps) * logp[y] - eps / 7 * logp.sum()
            count += 1
    assert nsp is None
    assert lm.item() == pytest.approx(float(expected), rel=1e-6)
    assert target_counts({"labels": labels}, shift=True) == (count, 0) == (6, 0)
    unshifted, _ = loss_sums(outputs, {"labels": labels}, shift=False, label_smoothing=0.0)
    plain = -sum(
        torch.log_softmax(logits[b, t], -1)[labels[b, t]]
        for b in range(2)
        for t in range(5)
        if labels[b, t] != -100
    )
    assert unshifted.item() == pytest.approx(plain.item(), rel=1e-6)


def test_nsp_loss_is_summed_over_sentence_pairs():
    outputs = {
        "prediction_logits": torch.zeros(2, 3, 5),
        "seq_relationship_logits": torch.tensor([[2.0, 0.0], [0.0, 1.0]]),
    }
    batch = {"labels": torch.full((2, 3), -100), "next_sentence_label": torch.tensor([0, 0])}
    lm, nsp = loss_sums(outputs, batch, shift=False, label_smoothing=0.0)
    expected = -math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (1 + math.e))
    assert lm.item() == 0.0 and nsp.item() == pytest.approx(expected, rel=1e-6)


def test_logged_loss_is_token_level_mean_over_the_global_batch(tmp_path, tiny, one_thread):
    model, data, collator = tiny["gpt2"](), tiny["dataset"](), tiny["Collator"]()
    # the first global batch (8 examples) as the loop orders it, in 4 micro-batches of 2
    first = epoch_batches(
        data["length"], seed=0, epoch=0, global_batch_size=8, group_by_length=True
    )[0]
    loss_sum, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, 8, 2):
            batch = collator([data[j] for j in first[i : i + 2]])
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            labels = batch["labels"][:, 1:]
            loss_sum += torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"
            ).item()
            tokens += int((labels != -100).sum())
    tiny["run"](tmp_path, model=model, train_data=data, max_steps=1, batch_size=2, grad_accum=4)
    (row,) = _train_rows(tmp_path)
    assert row["target_tokens"] == tokens
    assert row["loss"] == pytest.approx(loss_sum / tokens, rel=1e-6)


def test_grad_accum_does_not_change_loss_or_weights(tmp_path, tiny, one_thread):
    # Adam turns float noise in a gradient that is zero in exact arithmetic (attention key
    # bias) into a full step; a small lr and eps 1e-6 keep that below the tolerance
    optim = {"lr": 1e-4, "eps": 1e-6}
    tiny["run"](tmp_path / "one", max_steps=3, batch_size=8, grad_accum=1, optim=optim)
    tiny["run"](tmp_path / "four", max_steps=3, batch_size=2, grad_accum=4, optim=optim)
    one, four = _train_rows(tmp_path / "one"), _train_rows(tmp_path / "four")
    assert [r["loss"] for r in one] == pytest.approx([r["loss"] for r in four], abs=1e-6)
    assert [r["target_tokens"] for r in one] == [r["target_tokens"] for r in four]
    expected, got = _weights(tmp_path / "one"), _weights(tmp_path / "four")
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-6, rtol=0, msg=name)


# --------------------------------------------------------------------------- heads


def test_label_shift_and_decay_groups(tiny):
    gpt2, t5, bert = tiny["gpt2"](), tiny["t5"](), tiny["bert"]()
    assert (label_shift(gpt2), label_shift(t5), label_shift(bert)) == (True, False, False)
    decay, no_decay = param_groups(gpt2, 0.1)
    names = {id(p): n for n, p in gpt2.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(not names[id(p)].endswith("bias") for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {
        "transformer.ln_f.weight",
        "transformer.h.0.attn.c_attn.bias",
    }
    assert "transformer.h.0.mlp.c_fc.weight" in {names[id(p)] for p in decay["params"]}


def test_seq2seq_and_bert_pretraining(tmp_path, tiny, one_thread):
    evaluation = tiny["dataset"](n=10, seed=1)
    t5 = tiny["run"](
        tmp_path / "t5",
        model=tiny["t5"](),
        collator=tiny["Collator"]("seq2seq"),
        eval_data=evaluation,
        max_steps=2,
    )
    assert set(t5.eval_metrics) == {"eval_loss", "eval_ppl"}
    assert t5.eval_metrics["eval_ppl"] == pytest.approx(math.exp(t5.eval_metrics["eval_loss"]))
    bert = tiny["run"](
        tmp_path / "bert",
        model=tiny["bert"](),
        collator=tiny["Collator"]("mlm_nsp"),
        eval_data=evaluation,
        max_steps=2,
    )
    m = bert.eval_metrics
    assert m["eval_loss"] == pytest.approx(m["eval_mlm_loss"] + m["eval_nsp_loss"])
    assert m["eval_ppl"] == pytest.approx(math.exp(m["eval_mlm_loss"]))
    assert 0.0 <= m["eval_nsp_accuracy"] <= 1.0
    assert all(math.isfinite(r["loss"]) for r in _train_rows(tmp_path / "bert"))


def test_lora_checkpoints_hold_the_adapter_and_final_is_merged(tmp_path, tiny, one_thread):
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel

    def lora():
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
        return get_peft_model(tiny["gpt2"](), config)

    fields = {"save_every": 2, "optim": {"schedule": "constant"}}
    tiny["run"](tmp_path / "straight", model=lora(), max_steps=4, **fields)
    tiny["run"](tmp_path / "resumed", model=lora(), max_steps=2, **fields)
    result = tiny["run"](tmp_path / "resumed", model=lora(), max_steps=4, **fields)
    checkpoint = result.last_checkpoint
    assert (checkpoint / "adapter_model.safetensors").exists()
    assert not (checkpoint / "model.safetensors").exists()
    final = GPT2LMHeadModel.from_pretrained(result.final_dir)  # plain Transformers, no peft
    assert not any("lora" in name for name in final.state_dict())
    expected, got = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(expected[name].equal(got[name]) for name in expected)
    assert result.compute["trainable_matmul_params"] < result.compute["matmul_params"]


def test_data_loader_workers_do_not_change_the_run(tmp_path, tiny, one_thread):
    # the MLM collator masks at random, from default_rng([seed, epoch, idx]): the same
    # masks whether batches are made here or in a worker process
    for workers in (0, 1):
        tiny["run"](
            tmp_path / str(workers),
            model=tiny["bert"](),
            collator=tiny["Collator"]("mlm_nsp"),
            train_data=tiny["dataset"](n=8),
            max_steps=3,  # crosses into a second epoch
            num_workers=workers,
        )
    losses = [[r["loss"] for r in _train_rows(tmp_path / w)] for w in ("0", "1")]
    assert losses[0] == losses[1]
    expected, got = _weights(tmp_path / "0"), _weights(tmp_path / "1")
    assert all(expected[name].equal(got[name]) for name in expected)


def test_compiled_model_saves_clean_names(tmp_path, tiny, one_thread, monkeypatch):
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "eager")  # compiles without codegen: fast
    result = tiny["run"](tmp_path, max_steps=1, compile=True)
    names = load_file(result.last_checkpoint / "model.safetensors").keys()
    assert names and not any("_orig_mod" in name for name in names)
    assert names == _weights(tmp_path).keys()


# --------------------------------------------------------------------------- evaluation


def _scripted(scores):
    calls = iter(scores)
    return lambda model: {"score": next(calls)}


def test_early_stopping_and_best_checkpoint(tmp_path, tiny, one_thread):
    fields = {
        "max_steps": 10,
        "eval_data": tiny["dataset"](n=6, seed=1),
        "eval_every": 1,
        "metric": "score",
        "metric_mode": "max",
        "early_stopping_patience": 2,
    }
    result = tiny["run"](tmp_path, eval_fn=_scripted([1.0, 3.0, 2.0, 2.5, 9.0]), **fields)
    assert (result.step, result.stopped_because) == (4, "early_stopping")
    assert (result.best_step, result.best_metric) == (2, 3.0)
    assert result.best_checkpoint == tmp_path / "checkpoints" / "step-000002"
    assert (tmp_path / "best").resolve() == result.best_checkpoint.resolve()
    assert result.eval_metrics["score"] == 2.5 and "eval_loss" in result.eval_metrics
    assert result.last_checkpoint.name == "step-000004"
    # running the same command again does not train on past the stop
    again = tiny["run"](tmp_path, eval_fn=_scripted([]), **fields)
    assert (again.step, again.stopped_because, again.best_step) == (4, "early_stopping", 2)


def test_max_minutes_stops_and_checkpoints(tmp_path, tiny, one_thread):
    result = tiny["run"](tmp_path, max_steps=50, max_minutes=1e-6)
    assert (result.step, result.stopped_because) == (1, "max_minutes")
    assert result.last_checkpoint.name == "step-000001"
    assert (result.final_dir / "config.json").exists()


def test_unknown_metric_names_the_valid_ones(tmp_path, tiny, one_thread):
    with pytest.raises(UserError, match=r"train.metric 'bleu' .*eval_loss, eval_ppl"):
        tiny["run"](tmp_path, eval_data=tiny["dataset"](n=4), eval_every=1, metric="bleu")


def test_user_errors(tmp_path, tiny):
    with pytest.raises(UserError, match="fewer than one global batch of 32"):
        tiny["run"](tmp_path / "a", batch_size=8, grad_accum=4)
    with pytest.raises(UserError, match="early_stopping_patience needs validation data"):
        tiny["run"](tmp_path / "b", early_stopping_patience=2)
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        tiny["run"](tmp_path / "c", precision="fp16")


def test_length_grouping_sorts_by_the_group_key_when_the_objective_gives_one():
    from datasets import Dataset

    from lmforge.training.loop import _lengths

    # seq2seq rows with (source, target) lengths (2, 9) and (9, 2): every sum is 11, so grouping
    # by "length" cannot tell them apart; by group_key (source, then target) it can
    sources, targets = [2, 9] * 16, [9, 2] * 16
    rows = {
        "length": [s + t for s, t in zip(sources, targets, strict=True)],
        "group_key": [s * 10 + t for s, t in zip(sources, targets, strict=True)],
    }
    assert _lengths(Dataset.from_dict(rows)) == rows["group_key"]
    assert _lengths(Dataset.from_dict({"length": rows["length"]})) == rows["length"]

    def source_padding(key: list[int]) -> int:
        batches = epoch_batches(key, seed=0, epoch=0, global_batch_size=2, group_by_length=True)
        return sum(
            max(sources[i] for i in b) * len(b) - sum(sources[i] for i in b) for b in batches
        )

    assert source_padding(rows["group_key"]) < source_padding(rows["length"])
