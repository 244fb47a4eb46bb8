"""The training loop: one explicit loop, readable top to bottom, like nanoGPT's train.py.

Every objective uses this loop; they differ only by their collator (what a batch holds) and the
model's head. The loss is computed here from the logits, not by the model:

* token-level cross entropy summed over target positions (``labels != -100``), with label
  smoothing, shifted by one for causal LMs (logits at t predict the token at t+1, labels are
  the input ids, as in Transformers);
* divided by the number of target tokens in the *whole* optimizer step: every micro-batch of
  the accumulation window on every process. So the update and the reported loss do not change
  with ``grad_accum`` or the number of processes, only with the global batch;
* for BertForPreTraining (batches with ``next_sentence_label``) the loss is BERT's: the MLM
  loss per masked token plus the NSP loss per sentence pair, each normalised by its own count
  over the window. ``eval_ppl`` is the perplexity of the MLM part alone;
* with R-Drop (``optim.rdrop_alpha`` > 0; Liang et al. 2021) each micro-batch goes through the
  model twice (as one doubled batch, so dropout draws two masks): the cross entropy is the
  mean of the two passes, plus alpha times their symmetric KL divergence summed over target
  positions, normalised by the same target-token count. The log reports both parts.

Evaluation reports plain cross entropy (no label smoothing) and runs with the random state of
training set aside, so evaluating or not never changes the training trajectory.

Ctrl-C (SIGINT) or SIGTERM (``kill``, a job scheduler's notice before it stops a job) stops a
run cleanly: the loop finishes the optimizer step it is in, every process stops at that same
step, the checkpoint is saved and KeyboardInterrupt is raised; the same command resumes. A
second Ctrl-C interrupts at once; a second SIGTERM ends the process.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState, PartialState
from accelerate.utils import DistributedType, broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS
from transformers.trainer_pt_utils import get_parameter_names

from lmforge.config import EnergyConfig, OptimConfig, TrainConfig
from lmforge.errors import UserError
from lmforge.fsutil import write_json_atomic
from lmforge.training import checkpoint as ckpt
from lmforge.training.compute import FlopsCounter, compute_report, energy_settings, peak_flops
from lmforge.training.logging import RunLogger
from lmforge.training.precision import ACCELERATE_MIXED_PRECISION, resolve_precision
from lmforge.training.sampler import GROUP_KEY, epoch_batches, epoch_seed, shard_global_batch

COMPUTE_FILE = "compute.json"
# Same rule as transformers.Trainer.get_decay_parameter_names: no decay on biases and norms.
NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
NOT_MODEL_INPUTS = ("labels", "next_sentence_label")
# devices with torch's fused AdamW kernel (torch.optim.optimizer lists them, privately)
FUSED_ADAMW_DEVICES = ("cpu", "cuda", "xpu", "mps")


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    step: int
    stopped_because: str  # "max_steps", "max_minutes" or "early_stopping"
    metric: str
    best_metric: float | None
    best_step: int | None
    best_checkpoint: Path | None
    last_checkpoint: Path
    final_dir: Path
    eval_metrics: dict[str, float]  # the last evaluation ({} without eval data)
    compute: dict[str, Any]


# --------------------------------------------------------------------------- pieces


def lr_factor(
    step: int, *, warmup_steps: int, max_steps: int, schedule: str, min_lr_ratio: float
) -> float:
    """Learning rate of update ``step`` (0-based) as a fraction of the peak ``optim.lr``.

    Linear warmup reaching the peak at update ``warmup_steps - 1``, then cosine or linear decay
    that would reach ``min_lr_ratio`` at update ``max_steps``; ``constant`` stays at the peak.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        decay = 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices and embeddings, none on biases and norm weights."""
    decay = set(get_parameter_names(model, ALL_LAYERNORM_LAYERS, NO_DECAY_PATTERNS))
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in trainable if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in trainable if n not in decay], "weight_decay": 0.0},
    ]


def adamw(model: torch.nn.Module, optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``param_groups``, fused into one kernel per group where torch has that kernel.

    Fused is also Trainer's default (``adamw_torch_fused``). Unfused, torch steps a CPU model
    one parameter at a time: ~0.5 s of a ~3 s step of the small T5 on 2 cores, 4-8x the fused
    step (bench/train_throughput.py). Both are deterministic; a run keeps one of them.
    """
    groups = param_groups(model, optim.weight_decay)
    fused = device.type in FUSED_ADAMW_DEVICES and all(
        p.is_floating_point() for group in groups for p in group["params"]
    )
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=fused)


def _base(model: torch.nn.Module) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT


def label_shift(model: torch.nn.Module) -> bool:
    """True for causal LMs, whose logits at position t predict the label at t+1."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    base = _base(model)
    if getattr(base.config, "is_encoder_decoder", False):
        return False
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    return any(cls.__name__ in causal for cls in type(base).__mro__)


def target_counts(batch: dict[str, torch.Tensor], shift: bool) -> tuple[int, int]:
    """(target tokens, NSP sentence pairs) that the loss of ``batch`` sums over."""
    labels = batch["labels"][:, 1:] if shift else batch["labels"]
    pairs = batch.get("next_sentence_label")
    return int((labels != -100).sum()), int((pairs != -100).sum()) if pairs is not None else 0


def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], inputs: set[str]) -> Any:
    """Run the model on the batch's inputs (labels stay out: the loss is computed here)."""
    kwargs = {k: v for k, v in batch.items() if k in inputs and k not in NOT_MODEL_INPUTS}
    if "use_cache" in inputs:
        kwargs["use_cache"] = False
    return model(**kwargs)


def lm_logits(outputs: Any) -> torch.Tensor:
    """The language-model logits of a forward pass (BertForPreTraining names them apart)."""
    return outputs["logits"] if "logits" in outputs else outputs["prediction_logits"]


def loss_sums(
    outputs: Any, batch: dict[str, torch.Tensor], *, shift: bool, label_smoothing: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed token cross entropy over target positions, and summed NSP loss (or None)."""
    logits = lm_logits(outputs)  # (B, T, V)
    labels = batch["labels"]  # (B, T), -100 where no loss
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    lm = F.cross_entropy(
        logits.flatten(0, 1).float(),
        labels.flatten(),
        ignore_index=-100,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    if "next_sentence_label" not in batch:
        return lm, None
    nsp = F.cross_entropy(
        outputs["seq_relationship_logits"].float(),  # (B, 2)
        batch["next_sentence_label"],
        ignore_index=-100,
        reduction="sum",
    )
    return lm, nsp


def doubled(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every row twice (first all rows, then all again): R-Drop's two passes as one forward.

    One forward of the doubled batch rather than two forwards: DDP allows one backward per
    forward, and the two copies still get independent dropout masks."""
    return {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def rdrop_kl_sum(
    logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor, *, shift: bool
) -> torch.Tensor:
    """R-Drop's consistency term: 1/2 (KL(P_a || P_b) + KL(P_b || P_a)) of the token
    distributions of two passes, summed over target positions (``labels != -100``).

    Zero when the passes agree (no dropout); shapes (B, T, V) and (B, T)."""
    if shift:
        logits_a, logits_b, labels = logits_a[:, :-1], logits_b[:, :-1], labels[:, 1:]
    targets = labels != -100  # (B, T)
    log_a = F.log_softmax(logits_a[targets].float(), dim=-1)  # (N, V)
    log_b = F.log_softmax(logits_b[targets].float(), dim=-1)
    # kl_div(input, target) is KL(target || input)
    forward_kl = F.kl_div(log_b, log_a, reduction="sum", log_target=True)
    backward_kl = F.kl_div(log_a, log_b, reduction="sum", log_target=True)
    return (forward_kl + backward_kl) / 2


@contextlib.contextmanager
def rng_set_aside() -> Iterator[None]:
    """Run a block without disturbing the Python, NumPy and torch random streams of training."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


class GracefulInterrupt:
    """Ctrl-C (SIGINT) or SIGTERM (``kill``, a job scheduler's notice) as a request to stop:
    the first sets ``requested`` (the loop finishes its step and checkpoints) and puts that
    signal's default back, so a second Ctrl-C raises KeyboardInterrupt at once and a second
    SIGTERM ends the process. The previous handlers return when the block ends.

    Installed only in the main thread (the only one that may set signal handlers), and for
    each signal only where Python handles it or the system default would end the process:
    not where it is ignored, as SIGINT is in a shell's background job.
    """

    _DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    _NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self) -> None:
        self.requested = False
        self.by = "Ctrl-C"  # what asked, for the message (another process's Ctrl-C in DDP)
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            for signum in self._DEFAULTS:
                current = signal.getsignal(signum)
                handled = callable(current) or (
                    signum == signal.SIGTERM and current == signal.SIG_DFL
                )
                if handled:  # not ignored, not a handler set outside Python
                    self._previous[signum] = current
                    signal.signal(signum, self._request)
        return self

    def _request(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.by = self._NAMES[signal.Signals(signum)]
        signal.signal(signum, self._DEFAULTS[signal.Signals(signum)])

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the training process: a terminal sends SIGINT to the
    whole process group, and a worker that took it would quit and fail the step in progress."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _lengths(dataset: Any) -> list[int]:
    """What length grouping (and the eval order) sorts by: see sampler.GROUP_KEY."""
    return list(dataset[GROUP_KEY if GROUP_KEY in dataset.column_names else "length"])


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _steps_of_data(
    dataset: Any,
    collator: Any,
    *,
    seed: int,
    epoch: int,
    done: int,
    global_batch_size: int,
    group_by_length: bool,
    shard: Callable[[list[int]], list[list[int]]],
    num_workers: int,
) -> Iterator[tuple[int, int, list[dict[str, torch.Tensor]]]]:
    """Yield (epoch, global batches done in it, this process's micro-batches) per optimizer step.

    Starts at global batch ``done`` of ``epoch`` and runs through epochs forever.
    """
    lengths = _lengths(dataset)
    while True:
        batches = epoch_batches(
            lengths,
            seed=seed,
            epoch=epoch,
            global_batch_size=global_batch_size,
            group_by_length=group_by_length,
        )
        if done < len(batches):
            if hasattr(collator, "set_epoch"):
                collator.set_epoch(epoch)
            plan = [micro for batch in batches[done:] for micro in shard(batch)]
            per_step = len(plan) // (len(batches) - done)
            loader = DataLoader(
                dataset,
                batch_sampler=plan,
                collate_fn=collator,
                num_workers=num_workers,
                worker_init_fn=_ignore_sigint if num_workers else None,
                # seeds worker processes without drawing from the global torch RNG
                generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)),
            )
            micro_batches = iter(loader)
            for i in range(done, len(batches)):
                yield epoch, i + 1, [next(micro_batches) for _ in range(per_step)]
        epoch, done = epoch + 1, 0


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    accelerator: Accelerator,
    dataset: Any,
    collator: Any,
    *,
    batch_size: int,
    max_batches: int | None,
    shift: bool,
    inputs: set[str],
    prepare: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    num_workers: int,
) -> dict[str, float]:
    """Token-level eval loss and perplexity over (the first ``max_batches`` batches of) ``dataset``.

    Batches go round-robin to processes; every process runs the same number of forwards (one
    without a batch repeats its last, with weight 0) so collective ops inside the model match.
    """
    # the first rows (all, or max_batches' worth), batched longest first: little padding
    order = list(range(min(len(dataset), (max_batches or len(dataset)) * batch_size)))
    if "length" in dataset.column_names:
        lengths = _lengths(dataset)
        order.sort(key=lambda i: -lengths[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    world, rank = accelerator.num_processes, accelerator.process_index
    rounds = math.ceil(len(batches) / world)
    mine = [batches[min(k * world + rank, len(batches) - 1)] for k in range(rounds)]
    weights = [1.0 if k * world + rank < len(batches) else 0.0 for k in range(rounds)]
    loader = DataLoader(
        dataset,
        batch_sampler=mine,
        collate_fn=collator,
        num_workers=num_workers,
        worker_init_fn=_ignore_sigint if num_workers else None,
    )

    model.eval()
    # sums over target tokens: lm loss, tokens, nsp loss, pairs, correct nsp predictions
    sums = torch.zeros(5, dtype=torch.float64, device=accelerator.device)
    for weight, batch in zip(weights, loader, strict=True):
        batch = prepare(_to_device(batch, accelerator.device))
        outputs = forward(model, batch, inputs)
        lm, nsp = loss_sums(outputs, batch, shift=shift, label_smoothing=0.0)
        tokens, pairs = target_counts(batch, shift)
        row = [lm.item(), tokens, 0.0, pairs, 0.0]
        if nsp is not None:
            predicted = outputs["seq_relationship_logits"].argmax(-1)
            row[2] = nsp.item()
            row[4] = float((predicted == batch["next_sentence_label"]).sum())
        sums += weight * torch.tensor(row, dtype=torch.float64, device=sums.device)
    model.train()
    lm_sum, tokens, nsp_sum, pairs, correct = accelerator.reduce(sums, "sum").tolist()

    lm_loss = lm_sum / max(tokens, 1)
    results = {"eval_loss": lm_loss, "eval_ppl": math.exp(min(lm_loss, 700.0))}
    if pairs:
        results["eval_loss"] = lm_loss + nsp_sum / pairs
        results["eval_mlm_loss"] = lm_loss
        results["eval_nsp_loss"] = nsp_sum / pairs
        results["eval_nsp_accuracy"] = correct / pairs
    return results


def _metric_value(results: dict[str, float], metric: str) -> float:
    for name in (metric, f"eval_{metric}"):
        if name in results:
            return float(results[name])
    raise UserError(
        f"train.metric {metric!r} is not among the evaluation metrics "
        f"(valid choices: {', '.join(sorted(results))})"
    )


def _check_inputs(
    train_dataset: Any, eval_dataset: Any, global_batch: int, train: TrainConfig, world: int
) -> None:
    if train.group_by_length and "length" not in train_dataset.column_names:
        raise ValueError("train.group_by_length needs a 'length' column in the training dataset")
    if len(train_dataset) < global_batch:
        raise UserError(
            f"the training data has {len(train_dataset)} examples, fewer than one global batch of "
            f"{global_batch} (train.batch_size {train.batch_size} x train.grad_accum "
            f"{train.grad_accum} x {world} processes); lower train.batch_size or add data"
        )
    if eval_dataset is not None and len(eval_dataset) == 0:
        raise UserError("the validation data is empty; give some rows or no validation data")
    if train.early_stopping_patience and eval_dataset is None:
        raise UserError("train.early_stopping_patience needs validation data to evaluate on")


def _eval_collator(collator: Any) -> Any:
    """A shallow copy fixed at epoch 0, so evaluation batches are the same at every eval."""
    eval_collator = copy.copy(collator)
    if hasattr(eval_collator, "set_epoch"):
        eval_collator.set_epoch(0)
    return eval_collator


def _fresh_accelerator(precision: str, compile: bool) -> Accelerator:
    """An Accelerator configured for this call (train() may run several times in one process)."""
    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(
        cpu=not torch.accelerator.is_available(),
        mixed_precision=ACCELERATE_MIXED_PRECISION[precision],
        # ACCELERATE_DYNAMO_BACKEND (Accelerate's own variable) picks another compile backend
        dynamo_backend=os.environ.get("ACCELERATE_DYNAMO_BACKEND", "inductor") if compile else "no",
        # the schedule counts optimizer updates; by default Accelerate would step it once per process
        step_scheduler_with_optimizer=False,
        log_with=None,
    )


# --------------------------------------------------------------------------- the loop


def train(
    model: torch.nn.Module,
    tokenizer: Any,
    train_dataset: Any,
    collator: Any,
    *,
    run_dir: Path,
    optim: OptimConfig,
    train: TrainConfig,
    seed: int,
    eval_dataset: Any = None,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    config_yaml: str | None = None,
    resume: bool = True,
    energy: EnergyConfig | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_dataset`` batched by ``collator``; resume from ``run_dir``.

    Datasets are ``datasets.Dataset`` with ``idx`` and ``length`` columns; the collator maps a
    list of rows to tensors with ``labels`` (-100 where no loss) and may have ``set_epoch``.
    ``eval_fn(model)`` adds metrics (e.g. BLEU of generations) to each evaluation; it runs on
    the main process with the unwrapped model. ``energy`` sets the power and grid figures of
    compute.json's estimate (None: the environment's, else the defaults).
    Ctrl-C stops after the current step with a checkpoint and raises KeyboardInterrupt.
    """
    run_dir = Path(run_dir)

    # 1. Hardware, precision, processes. -------------------------------------------------
    device = PartialState(cpu=not torch.accelerator.is_available()).device
    precision = resolve_precision(train.precision, device)
    accelerator = _fresh_accelerator(precision, train.compile)
    main, world = accelerator.is_main_process, accelerator.num_processes
    global_batch = train.batch_size * train.grad_accum * world
    _check_inputs(train_dataset, eval_dataset, global_batch, train, world)
    if accelerator.distributed_type == DistributedType.DEEPSPEED and train.grad_accum > 1:
        raise UserError(
            "train.grad_accum must be 1 under DeepSpeed (its engine steps at every backward); "
            "raise train.batch_size instead"
        )
    energy = energy or EnergyConfig()
    # resolved now: a bad LMFORGE_POWER_WATTS fails before training, not after hours of it
    energy_figures = energy_settings(
        accelerator.device.type, energy.power_watts, energy.grid_gco2_per_kwh
    )
    shift = label_shift(model)
    inputs = set(inspect.signature(_base(model).forward).parameters)
    # seq2seq models get decoder inputs from the labels (shifted right) unless the batch has them
    seq2seq = getattr(_base(model).config, "is_encoder_decoder", False)
    decoder_inputs = _base(model).prepare_decoder_input_ids_from_labels if seq2seq else None

    def add_decoder_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if decoder_inputs is not None and "decoder_input_ids" not in batch:
            batch["decoder_input_ids"] = decoder_inputs(labels=batch["labels"])
        return batch

    # 2. Optimizer, schedule, counters. -----------------------------------------------------
    counter = FlopsCounter.from_model(model)
    optimizer = adamw(model, optim, accelerator.device)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        partial(
            lr_factor,
            warmup_steps=optim.warmup_steps,
            max_steps=train.max_steps,
            schedule=optim.schedule,
            min_lr_ratio=optim.min_lr_ratio,
        ),
    )
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    ckpt.keep_weights_out_of_accelerate_state(accelerator)
    eval_collator = _eval_collator(collator) if eval_dataset is not None else None

    # 3. Resume from the newest complete checkpoint, or start fresh. ------------------------
    removed = ckpt.remove_incomplete(run_dir) if main else []
    accelerator.wait_for_everyone()
    checkpoints = ckpt.complete_checkpoints(run_dir)
    if checkpoints and not resume:
        raise UserError(
            f"{run_dir / ckpt.CHECKPOINTS_DIR} already holds checkpoints; resume the run "
            "or choose another run directory"
        )
    state: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "batches_done": 0,  # global batches of `epoch` already trained on
        "global_batch_size": global_batch,
        "tokens": 0,
        "target_tokens": 0,
        "flops": 0.0,
        "elapsed_s": 0.0,
        "step_time_s": 0.0,
        "best_metric": None,
        "best_step": None,
        "evals_without_improvement": 0,
        "last_eval_step": None,
        "last_eval": {},
    }
    if checkpoints:
        state = ckpt.load_checkpoint(accelerator, model, checkpoints[-1])
        if state["global_batch_size"] != global_batch:
            raise UserError(
                f"{checkpoints[-1]} was trained with a global batch of "
                f"{state['global_batch_size']} examples, this run has {global_batch} "
                "(train.batch_size x train.grad_accum x processes); keep it to resume exactly"
            )
    else:
        set_seed(seed)
    start_step = state["step"]
    peak = peak_flops(run_dir, accelerator.device, precision) if main else {}
    logger = RunLogger(run_dir, enabled=main, start_step=start_step, max_steps=train.max_steps)
    if main and removed:
        logger.print(f"removed incomplete checkpoint files: {', '.join(p.name for p in removed)}")
    if checkpoints:
        logger.print(f"resuming from {checkpoints[-1]} (step {start_step})")

    def save(step: int) -> Path:
        """Checkpoint now (once per step), keep the newest train.keep_last and the best."""
        path = ckpt.checkpoint_dir(run_dir, step)
        if not (path / ckpt.COMPLETE_MARKER).exists():
            ckpt.save_checkpoint(
                accelerator,
                model,
                tokenizer,
                run_dir=run_dir,
                step=step,
                state=state,
                config_yaml=config_yaml,
            )
        if main:
            best = state["best_step"]
            best_dir = ckpt.checkpoint_dir(run_dir, best) if best is not None else None
            ckpt.prune_checkpoints(run_dir, train.keep_last, best_dir)
        accelerator.wait_for_everyone()
        return path

    def run_eval(step: int) -> str | None:
        """Evaluate, keep the best checkpoint; returns "early_stopping" when patience runs out."""
        with rng_set_aside():
            results = evaluate(
                model,
                accelerator,
                eval_dataset,
                eval_collator,
                batch_size=train.batch_size,
                max_batches=train.eval_batches,
                shift=shift,
                inputs=inputs,
                prepare=add_decoder_inputs,
                num_workers=train.num_workers,
            )
            if eval_fn is not None:
                extra = [None]
                if main:
                    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
                    unwrapped.eval()
                    extra = [{k: float(v) for k, v in eval_fn(unwrapped).items()}]
                    unwrapped.train()
                results.update(broadcast_object_list(extra)[0])
        value = _metric_value(results, train.metric)
        best = state["best_metric"]
        improved = best is None or (value < best if train.metric_mode == "min" else value > best)
        state["last_eval_step"], state["last_eval"] = step, results
        logger.log("eval", {"step": step, **results, "elapsed": round(state["elapsed_s"], 3)})
        if improved:
            state.update(best_metric=value, best_step=step, evals_without_improvement=0)
            best_dir = save(step)
            if main:
                ckpt.point_best(run_dir, best_dir)
            return None
        state["evals_without_improvement"] += 1
        if patience and state["evals_without_improvement"] >= patience:
            return "early_stopping"
        return None

    # 4. Train. --------------------------------------------------------------------------
    data = _steps_of_data(
        train_dataset,
        collator,
        seed=seed,
        epoch=state["epoch"],
        done=state["batches_done"],
        global_batch_size=global_batch,
        group_by_length=train.group_by_length,
        shard=partial(
            shard_global_batch,
            batch_size=train.batch_size,
            grad_accum=train.grad_accum,
            num_processes=world,
            process_index=accelerator.process_index,
        ),
        num_workers=train.num_workers,
    )
    elapsed_before, session_start = state["elapsed_s"], time.monotonic()
    patience = train.early_stopping_patience
    # a rerun of an early-stopped run must not train on
    stop = "early_stopping" if patience and state["evals_without_improvement"] >= patience else None
    # sums since the last log line
    log_loss, log_steps, log_tokens = torch.zeros((), device=accelerator.device), 0, 0
    log_kl = torch.zeros((), device=accelerator.device)
    rdrop = optim.rdrop_alpha > 0
    log_flops, log_seconds = 0.0, 0.0
    model.train()
    step = start_step
    with GracefulInterrupt() as interrupt:
        while step < train.max_steps and stop is None:
            step_start = time.perf_counter()
            epoch, batches_done, micro_batches = next(data)
            micro_batches = [
                add_decoder_inputs(_to_device(b, accelerator.device)) for b in micro_batches
            ]

            # Count the window's targets on every process first: the loss is normalised by them.
            counts = torch.zeros(4, dtype=torch.float64, device=accelerator.device)
            for batch in micro_batches:
                targets, pairs = target_counts(batch, shift)
                mask = batch.get("attention_mask")
                tokens = int(mask.sum()) if mask is not None else batch["input_ids"].numel()
                passes = 2 if rdrop else 1  # R-Drop runs every example twice
                counts += torch.tensor(
                    [targets, pairs, tokens, passes * counter.batch_flops(batch)],
                    dtype=torch.float64,
                    device=counts.device,
                )
            n_targets, n_pairs, n_tokens, flops = accelerator.reduce(counts, "sum").tolist()

            step_loss = torch.zeros((), device=accelerator.device)
            step_kl = torch.zeros((), device=accelerator.device)
            for i, batch in enumerate(micro_batches):
                last = i == len(micro_batches) - 1
                # gradients are all-reduced across processes only after the window's last micro-batch
                with contextlib.nullcontext() if last else accelerator.no_sync(model):
                    if rdrop:
                        twice = doubled(batch)
                        outputs = forward(model, twice, inputs)
                        lm, nsp = loss_sums(
                            outputs, twice, shift=shift, label_smoothing=optim.label_smoothing
                        )
                        lm, nsp = lm / 2, nsp / 2 if nsp is not None else None  # mean of the passes
                        first, second = lm_logits(outputs).chunk(2)
                        kl = rdrop_kl_sum(first, second, batch["labels"], shift=shift)
                    else:
                        outputs = forward(model, batch, inputs)
                        lm, nsp = loss_sums(
                            outputs, batch, shift=shift, label_smoothing=optim.label_smoothing
                        )
                        kl = torch.zeros((), device=accelerator.device)
                    loss = lm / max(n_targets, 1.0)
                    if nsp is not None:
                        loss = loss + nsp / max(n_pairs, 1.0)
                    kl = kl / max(n_targets, 1.0)
                    # DDP averages gradients over processes; scaling by `world` makes that a sum
                    accelerator.backward((loss + optim.rdrop_alpha * kl) * world)
                step_loss += loss.detach()
                step_kl += kl.detach()

            lr = optimizer.param_groups[0]["lr"]
            grad_norm = None  # stays None under DeepSpeed, whose engine clips (its own config)
            if optim.grad_clip is not None:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), optim.grad_clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            seconds = time.perf_counter() - step_start
            state.update(step=step, epoch=epoch, batches_done=batches_done)
            state["tokens"] += int(n_tokens)
            state["target_tokens"] += int(n_targets)
            state["flops"] += flops
            state["step_time_s"] += seconds
            state["elapsed_s"] = elapsed_before + time.monotonic() - session_start
            log_loss += step_loss
            log_kl += step_kl
            log_steps, log_tokens = log_steps + 1, log_tokens + int(n_tokens)
            log_flops, log_seconds = log_flops + flops, log_seconds + seconds
            logger.advance(step)

            if step % train.log_every == 0 or step == train.max_steps:
                row = {
                    "step": step,
                    "epoch": epoch,
                    "loss": accelerator.reduce(log_loss, "sum").item() / log_steps,
                    "lr": lr,
                    "tokens": state["tokens"],
                    "target_tokens": state["target_tokens"],
                    "tokens_per_s": log_tokens / log_seconds,
                    "elapsed": round(state["elapsed_s"], 3),
                }
                if rdrop:
                    row["rdrop_kl"] = accelerator.reduce(log_kl, "sum").item() / log_steps
                if grad_norm is not None:
                    row["grad_norm"] = float(grad_norm)
                if main:
                    device_peak = peak["flops_per_s"].get(precision, peak["flops_per_s"]["fp32"])
                    row["mfu"] = log_flops / (log_seconds * device_peak * world)
                logger.log("train", row)
                log_loss.zero_()
                log_kl.zero_()
                log_steps, log_tokens, log_flops, log_seconds = 0, 0, 0.0, 0.0

            if eval_dataset is not None and step % train.eval_every == 0:
                stop = run_eval(step)
            if step % train.save_every == 0:
                save(step)
            # Out of time or Ctrl-C on any process: every process stops after this same step.
            out_of_time = (
                train.max_minutes is not None
                and time.monotonic() - session_start > train.max_minutes * 60
            )
            flags = torch.tensor(
                [float(out_of_time), float(interrupt.requested)], device=accelerator.device
            )
            out_of_time, interrupted = (accelerator.reduce(flags, "sum") > 0).tolist()
            if out_of_time:
                stop = stop or "max_minutes"
            if interrupted:
                stop = stop or "interrupted"

    if stop == "interrupted":
        state["elapsed_s"] = elapsed_before + time.monotonic() - session_start
        checkpoint = save(step)
        logger.close()
        if main:
            print(
                f"lmforge: stopped at step {step} ({interrupt.by}); checkpoint saved in "
                f"{checkpoint}; run the same command again to resume",
                file=sys.stderr,
            )
        raise KeyboardInterrupt

    # 5. Finish: last evaluation, last checkpoint, final model, what it cost. --------------
    stopped_because = stop or "max_steps"
    if eval_dataset is not None and state["last_eval_step"] != step:
        run_eval(step)
    state["elapsed_s"] = elapsed_before + time.monotonic() - session_start
    last_checkpoint = save(step)
    final_dir = ckpt.save_final(
        accelerator, model, tokenizer, run_dir=run_dir, config_yaml=config_yaml
    )
    compute: dict[str, Any] = {}
    if main:
        compute = compute_report(
            counter=counter,
            tokens=state["tokens"],
            target_tokens=state["target_tokens"],
            train_flops=state["flops"],
            wall_seconds=state["elapsed_s"],
            step_seconds=state["step_time_s"],
            steps=step,
            precision=precision,
            num_processes=world,
            peak=peak,
            energy=energy_figures,
        )
        write_json_atomic(run_dir / COMPUTE_FILE, compute)
        logger.print(f"done at step {step} ({stopped_because}); final model in {final_dir}")
    logger.close()
    compute = broadcast_object_list([compute])[0]
    best_step = state["best_step"]
    return TrainResult(
        step=step,
        stopped_because=stopped_because,
        metric=train.metric,
        best_metric=state["best_metric"],
        best_step=best_step,
        best_checkpoint=ckpt.checkpoint_dir(run_dir, best_step) if best_step is not None else None,
        last_checkpoint=last_checkpoint,
        final_dir=final_dir,
        eval_metrics=state["last_eval"],
        compute=compute,
    )
