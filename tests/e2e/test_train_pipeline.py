"""Whole commands: pretrain from scratch, then fine-tune, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmforge.runs import read_model_card
from lmforge.training.logging import read_metrics

pytestmark = pytest.mark.slow

TRAIN = {
    "batch_size": 8,
    "eval_every": 10,
    "save_every": 20,
    "log_every": 5,
    "eval_batches": 4,
}


def write_config(path: Path, **sections: object) -> Path:
    path.write_text(yaml.safe_dump(sections, sort_keys=False), encoding="utf-8")
    return path


def eval_losses(run_dir: Path) -> list[float]:
    return [m["eval_loss"] for m in read_metrics(run_dir) if "eval_loss" in m]


def pretrain_config(tmp_path: Path, corpus: Path, family: str, objective: str, steps: int) -> Path:
    return write_config(
        tmp_path / f"pretrain-{family}.yaml",
        run_dir=str(tmp_path / f"pre-{family}"),
        seed=1,
        data=[
            {
                "path": str(corpus),
                "task": "text",
                "columns": {"text": "code"},
                "split": {"validation": 0.2, "test": 0.1, "group_by": "path"},
            },
            {
                "path": str(corpus),
                "task": "text",
                "columns": {"text": "docstring"},
                "split": {"validation": 0.2, "test": 0.1, "group_by": "path"},
            },
        ],
        tokenizer={"vocab_size": 420},
        model={"family": family, "preset": "tiny"},
        objective={"name": objective, "block_size": 32},
        optim={"lr": 3e-3, "warmup_steps": 5},
        train={**TRAIN, "max_steps": steps},
    )


def test_t5_pretrain_then_finetune_code_comment(cli, tmp_path: Path, corpus: Path) -> None:
    config = pretrain_config(tmp_path, corpus, "t5", "span_corruption", 40)
    result = cli("pretrain", config)
    assert result.code == 0, result.err
    run = tmp_path / "pre-t5"
    losses = eval_losses(run)
    assert len(losses) >= 3 and losses[-1] < losses[0]
    for name in ("config.yaml", "metrics.jsonl", "compute.json", "tokenizer", "final"):
        assert (run / name).exists(), name
    assert (run / "final" / "model.safetensors").is_file()
    compute = json.loads((run / "compute.json").read_text())
    assert compute["tokens"] > 0 and compute["train_flops"] > 0 and 0 < compute["mfu"] < 1

    # The same command again resumes the finished run: nothing is retrained or lost.
    again = cli("pretrain", config)
    assert again.code == 0, again.err
    assert eval_losses(run)[: len(losses)] == losses

    # Another config in the same run directory is refused, naming what changed.
    changed = cli("pretrain", config, "--set", "optim.lr=0.5")
    assert changed.code == 2
    assert "optim.lr" in changed.err and "Traceback" not in changed.err

    finetune = write_config(
        tmp_path / "finetune.yaml",
        run_dir=str(tmp_path / "ft-t5"),
        seed=1,
        data=[
            {
                "path": str(corpus),
                "task": "code-comment",
                "columns": {"docstring": "summary"},
                "split": {"validation": 0.2, "test": 0.1, "group_by": "path"},
            }
        ],
        model={"pretrained": str(run / "final")},
        objective={"max_source_length": 48, "max_target_length": 16},
        optim={"lr": 3e-3, "warmup_steps": 5},
        train={**TRAIN, "max_steps": 40},
    )
    result = cli("finetune", finetune)
    assert result.code == 0, result.err
    losses = eval_losses(tmp_path / "ft-t5")
    assert losses[-1] < losses[0]
    card = read_model_card(tmp_path / "ft-t5" / "final")
    assert card["objective"] == "seq2seq_sft"
    assert card["tasks"][0]["task"] == "code-comment"

    from lmforge import LM

    lm = LM.from_pretrained(tmp_path / "ft-t5" / "final")
    assert lm.task == "code-comment"
    out = lm.generate(["def add_3(x):\n    return x + 3", "def mul_2(x):\n    return x * 2"])
    assert len(out) == 2 and all(isinstance(o, str) for o in out)


@pytest.mark.parametrize(
    "family, objective", [("gpt2", "causal_lm"), ("bert", "mlm_nsp"), ("llama", "causal_lm")]
)
def test_pretraining_loss_falls(cli, tmp_path: Path, corpus: Path, family: str, objective: str):
    result = cli("pretrain", pretrain_config(tmp_path, corpus, family, objective, 30))
    assert result.code == 0, result.err
    losses = eval_losses(tmp_path / f"pre-{family}")
    assert len(losses) >= 3 and losses[-1] < losses[0]


def test_bad_config_is_one_line_exit_2(cli, tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.yaml", data=[{"path": "x.jsonl"}], trian={"max_steps": 3})
    result = cli("pretrain", config)
    assert result.code == 2
    assert "did you mean 'train'" in result.err
    assert len(result.err.strip().splitlines()) == 1
