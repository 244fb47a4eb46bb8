"""Tiny models, data and collators for the training tests, and a script that trains them.

The tests load this file with ``runpy`` (fixture ``tiny``) and run it as a script in
subprocesses (kill-and-resume, torchrun), so both see exactly the same run::

    python tiny_run.py RUN_DIR [--max-steps 12] [--batch-size 4] [--dropout 0.1] ...
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

VOCAB = 100
PAD = 0


def gpt2(dropout: float = 0.0, seed: int = 0) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=64,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=PAD,
    )
    return GPT2LMHeadModel(config)


def t5(seed: int = 0) -> Any:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=VOCAB,
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        dropout_rate=0.0,
        decoder_start_token_id=PAD,
        pad_token_id=PAD,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(config)


def bert(seed: int = 0) -> Any:
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=PAD,
    )
    return BertForPreTraining(config)


def tokenizer() -> Any:
    """A word-level tokenizer over w0..w99 (w0 is padding), built here: no downloads."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w3"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="w0", unk_token="w3")


def dataset(n: int = 16, seed: int = 0, min_len: int = 4, max_len: int = 16) -> datasets.Dataset:
    """Rows of random token ids with ``idx``, ``length`` and a short ``target_ids``."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        rows.append(
            {
                "idx": i,
                "length": length,
                "input_ids": rng.integers(3, VOCAB, length).tolist(),
                "target_ids": rng.integers(3, VOCAB, int(rng.integers(2, 7))).tolist(),
            }
        )
    return datasets.Dataset.from_list(rows)


def _pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    return ids, mask


class Collator:
    """``causal``: labels are the inputs; ``seq2seq``: labels are the targets; ``mlm_nsp``:
    15% of tokens masked and a random NSP label, from ``default_rng([seed, epoch, idx])``."""

    def __init__(self, kind: str = "causal", seed: int = 0) -> None:
        self.kind, self.seed, self.epoch = kind, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask = _pad([r["input_ids"] for r in rows])
        batch = {"input_ids": ids, "attention_mask": mask}
        if self.kind == "causal":
            batch["labels"] = ids.masked_fill(mask == 0, -100)
        elif self.kind == "seq2seq":
            targets, target_mask = _pad([r["target_ids"] for r in rows])
            batch["labels"] = targets.masked_fill(target_mask == 0, -100)
        else:
            labels = torch.full_like(ids, -100)
            nsp = torch.zeros(len(rows), dtype=torch.long)
            for i, row in enumerate(rows):
                rng = np.random.default_rng([self.seed, self.epoch, row["idx"]])
                picked = np.flatnonzero(rng.random(row["length"]) < 0.15)
                picked = picked if len(picked) else np.array([0])
                labels[i, picked] = ids[i, picked]
                ids[i, picked] = 4  # [MASK]
                nsp[i] = int(rng.integers(0, 2))
            batch.update(labels=labels, next_sentence_label=nsp)
        return batch


class DieOnce(Collator):
    """Kills its own process with SIGKILL when it first meets example ``idx`` in ``epoch``."""

    def __init__(self, idx: int, epoch: int, flag: Path, slow: float = 0.0) -> None:
        super().__init__("causal")
        self.idx, self.die_epoch, self.flag, self.slow = idx, epoch, flag, slow

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        time.sleep(self.slow)
        seen = any(r["idx"] == self.idx for r in rows)
        if seen and self.epoch == self.die_epoch and self.flag and not self.flag.exists():
            self.flag.write_text("killed\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(rows)


def seed_peak_cache(run_dir: Path, **flops_per_s: float) -> None:
    """Pretend the matmul peak was measured already (measuring takes seconds)."""
    from lmforge.training.compute import PEAK_CACHE, device_name

    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / PEAK_CACHE).exists():
        peaks = {"fp32": 1e10, **flops_per_s}
        cache = {"device": device_name(torch.device("cpu")), "flops_per_s": peaks}
        (run_dir / PEAK_CACHE).write_text(json.dumps(cache))


def run(
    run_dir: Path,
    *,
    model: Any = None,
    collator: Any = None,
    train_data: Any = None,
    eval_data: Any = None,
    tok: Any = None,
    seed: int = 0,
    eval_fn: Any = None,
    resume: bool = True,
    config_yaml: str | None = None,
    optim: dict[str, Any] | None = None,
    **train_fields: Any,
) -> Any:
    """train() a tiny GPT-2 (unless ``model`` is given) with small defaults, fp32, no warmup."""
    from lmforge.config import OptimConfig, TrainConfig
    from lmforge.training import train

    seed_peak_cache(run_dir)
    fields = {"max_steps": 4, "batch_size": 4, "precision": "fp32", "log_every": 1}
    fields = {**fields, "eval_every": 1000, "save_every": 1000, **train_fields}
    return train(
        model if model is not None else gpt2(),
        tok,
        train_data if train_data is not None else dataset(),
        collator if collator is not None else Collator(),
        run_dir=run_dir,
        optim=OptimConfig(**{"lr": 1e-2, "warmup_steps": 0, **(optim or {})}),
        train=TrainConfig(**fields),
        seed=seed,
        eval_dataset=eval_data,
        eval_fn=eval_fn,
        config_yaml=config_yaml,
        resume=resume,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--save-every", type=int, default=3)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--eps", type=float, default=1e-8)
    parser.add_argument("--die-at", default=None, help="IDX:EPOCH, kill on first sight (once)")
    parser.add_argument("--die-flag", type=Path, default=None)
    parser.add_argument("--slow", type=float, default=0.0, help="seconds to sleep per batch")
    args = parser.parse_args(argv)
    idx, epoch = (int(x) for x in args.die_at.split(":")) if args.die_at else (-1, -1)
    result = run(
        args.run_dir,
        model=gpt2(dropout=args.dropout),
        collator=DieOnce(idx, epoch, args.die_flag, args.slow),
        eval_data=dataset(n=10, seed=1),
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        save_every=args.save_every,
        eval_every=args.eval_every,
        keep_last=2,
        optim={"lr": args.lr, "eps": args.eps},
    )
    print(json.dumps({"step": result.step, "eval": result.eval_metrics}))


if __name__ == "__main__":
    main(sys.argv[1:])
