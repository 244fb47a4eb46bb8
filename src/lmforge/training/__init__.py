"""Training: one explicit loop on Accelerate, atomic resumable checkpoints, logs, compute.

``train(model, tokenizer, train_dataset, collator, run_dir=..., optim=..., train=..., seed=...)``
trains any Hugging Face model (seq2seq, causal, BertForPreTraining, or a PEFT model) and
returns a :class:`TrainResult`; see :mod:`lmforge.training.loop` for the whole story.
"""

from lmforge.training.loop import TrainResult, train

__all__ = ["TrainResult", "train"]
