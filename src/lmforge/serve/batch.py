"""One batched ``model.generate`` call for several requests, followed row by row.

Each sequence a request asked for is one row of the batch (a prompt with ``n=3`` is three
rows). :class:`RowTracker` is a stopping criterion, so ``generate`` calls it once per decoding
step with every row's ids so far; it takes each row's newest token and

* ends the row at its own ``max_tokens``, at eos, or at one of its own stop strings, so
  requests with different lengths and stops share a batch;
* hands a streaming row its new text at once (text that might begin a stop string, or an
  incomplete UTF-8 character, is held back until it is known), so streams are batched too;
* ends the rows of a request that was cancelled (its client went away, or it timed out).

A row it has ended is finished for ``generate`` too, which pads it from then on and stops
when every row is finished. A stopping criterion, not a streamer, because ``generate``
calls it after each step's tokens are in place and uses its answer in the same step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.modeling_outputs import BaseModelOutput

# The pieces of lmforge.generation a server's batches share with ``lmforge generate``: the
# same padding, seeding, finish reasons and token counts.
from lmforge.generation import (
    DecodingSettings,
    Generation,
    finish_generation,
    first_stop,
    for_inference,
    pad_prompts,
    seeded,
    special_ids,
)
from lmforge.models import model_kind

ENCODE_SLACK = 1.25  # a group of prompts encoded together pads at most 25% of its tokens

log = logging.getLogger("lmforge.serve")


@dataclass(frozen=True)
class Sampling:
    """The decoding settings a whole batch shares: requests batch together only when equal.

    ``seed`` is set only for a seeded sampling request, which runs alone: rows sampled in one
    batch share a random stream, so a seeded answer must not depend on its neighbours.
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_tokens: int = 0
    seed: int | None = None


@dataclass(frozen=True)
class Piece:
    """New text of choice ``index`` of a streaming request."""

    index: int
    text: str


@dataclass(frozen=True)
class Done:
    """Choice ``index`` is finished."""

    index: int
    generation: Generation


@dataclass(frozen=True)
class Failed:
    """The batch failed; the request gets a server error."""

    message: str


Event = Piece | Done | Failed


@dataclass(eq=False)
class Job:
    """One prompt of a request, with its ``n`` choices numbered from ``first_index``.

    ``emit`` delivers events to the request's handler (on the event loop's thread).
    """

    prompt_ids: list[int]
    n: int
    max_tokens: int
    stop: list[str]
    sampling: Sampling
    stream: bool
    emit: Callable[[Event], None]
    first_index: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = 0.0

    @property
    def group(self) -> tuple[Any, ...]:
        """Jobs with the same group may share a batch."""
        alone = id(self) if self.sampling.seed is not None else None
        return (self.sampling, alone)


class _Row:
    """The state of one generated sequence."""

    def __init__(self, job: Job, index: int, tokenizer: PreTrainedTokenizerBase, eos: int) -> None:
        self.job, self.index, self.tokenizer, self.eos = job, index, tokenizer, eos
        self.new_ids: list[int] = []
        self.emitted = 0  # characters of text already streamed
        self.done = False
        # Decode every step only when text is needed before the end: to stream, or to stop.
        self.watch = job.stream or bool(job.stop)
        # Without a stop string yet, one may still begin in the last ``hold`` characters.
        self.hold = max((len(s) for s in job.stop), default=1) - 1

    def step(self, token: int) -> bool:
        """Take this step's token; False when the request was cancelled (the row ends)."""
        if self.job.cancelled.is_set():
            self.done = True
            return False
        self.new_ids.append(token)
        if token == self.eos or len(self.new_ids) >= self.job.max_tokens:
            self.finish()
            return True
        if not self.watch:
            return True
        text = self.tokenizer.decode(self.new_ids, skip_special_tokens=True)
        # A character split over tokens shows as U+FFFD until its last byte arrives (at most 3
        # more), so up to 3 trailing ones are held back, as lmforge.generation.stream does.
        pending = min(3, len(text) - len(text.rstrip("\ufffd")))
        cut = first_stop(text, self.job.stop)
        limit = cut if cut is not None else len(text) - pending - self.hold
        if self.job.stream and limit > self.emitted:
            self.job.emit(Piece(self.index, text[self.emitted : limit]))
            self.emitted = limit
        if cut is not None:
            self.finish()
        return True

    def finish(self) -> None:
        """The row's Generation (cut at eos or a stop string), after any text not yet sent."""
        self.done = True
        if self.job.cancelled.is_set():
            return
        prompt_tokens = len(self.job.prompt_ids)
        result = finish_generation(
            self.tokenizer, self.new_ids, self.eos, self.job.stop, prompt_tokens
        )
        if self.job.stream and len(result.text) > self.emitted:
            self.job.emit(Piece(self.index, result.text[self.emitted :]))
        self.job.emit(Done(self.index, result))


class RowTracker(StoppingCriteria):
    """Follows every row of a batch step by step; ``on_step(tokens, live_rows)`` is told how
    many tokens the step added and how many rows are still going."""

    def __init__(self, rows: list[_Row], on_step: Callable[[int, int], None]) -> None:
        self.rows, self.on_step = rows, on_step

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        # input_ids: (rows, prompt or decoder-start width + steps so far); the last column is
        # this step's token of every row (padding for rows already finished).
        newest = input_ids[:, -1].tolist()
        taken = sum(
            row.step(token) for row, token in zip(self.rows, newest, strict=True) if not row.done
        )
        self.on_step(taken, sum(not row.done for row in self.rows))
        return torch.tensor([row.done for row in self.rows], device=input_ids.device)


def length_groups(lengths: list[int], slack: float = ENCODE_SLACK) -> list[list[int]]:
    """Indices of ``lengths`` in groups of similar length: sorted, each group as long as its
    padded size stays within ``slack`` times its tokens."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        group = groups[-1] if groups else []
        tokens = sum(lengths[j] for j in group) + lengths[i]
        if group and lengths[i] * (len(group) + 1) <= slack * tokens:
            group.append(i)
        else:
            groups.append([i])
    return groups


def encode(model: PreTrainedModel, jobs: list[Job], pad: int) -> BaseModelOutput:
    """The encoder's states for every row of ``jobs`` (a seq2seq model), padded to the
    longest prompt: (rows, longest prompt, d_model).

    A batch's prompts differ in length, and the encoder's work on padding is most of a
    padded batch's cost (it runs over every position of every row). Encoding each group of
    similar lengths apart, and each prompt once for its ``n`` rows, gives the same states
    (padding is masked) for a fraction of it; ``generate`` takes them as ``encoder_outputs``.
    """
    device = next(model.parameters()).device
    encoder = model.get_encoder()
    lengths = [len(job.prompt_ids) for job in jobs]
    states: list[torch.Tensor] = [torch.empty(0)] * len(jobs)
    for group in length_groups(lengths):
        ids, mask = pad_prompts([jobs[i].prompt_ids for i in group], pad, False, device)
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        for row, i in enumerate(group):
            states[i] = hidden[row, : lengths[i]]
    rows = [state for job, state in zip(jobs, states, strict=True) for _ in range(job.n)]
    return BaseModelOutput(
        last_hidden_state=torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    )


def run_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    jobs: list[Job],
    on_step: Callable[[int, int], None] = lambda tokens, live: None,
) -> int:
    """Generate every choice of ``jobs`` (which share one ``Sampling``) in one ``generate``
    call; results and stream pieces go out through each job's ``emit``. Returns the rows."""
    sampling = jobs[0].sampling
    pad, eos = special_ids(tokenizer)
    rows = [_Row(job, job.first_index + i, tokenizer, eos) for job in jobs for i in range(job.n)]
    prompts = [row.job.prompt_ids for row in rows]
    settings = DecodingSettings(
        max_new_tokens=max(job.max_tokens for job in jobs),
        min_new_tokens=sampling.min_tokens,
        do_sample=sampling.do_sample,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
    )
    device = next(model.parameters()).device
    seq2seq = model_kind(model) == "seq2seq"
    ids, mask = pad_prompts(prompts, pad, not seq2seq, device)
    tracker = RowTracker(rows, on_step)
    try:
        with torch.no_grad(), for_inference(model), seeded(sampling.seed, device):
            # seq2seq: the encoder's states, computed without the batch's padding
            inputs = (
                {"encoder_outputs": encode(model, jobs, pad)} if seq2seq else {"input_ids": ids}
            )
            model.generate(
                **inputs,
                attention_mask=mask,
                pad_token_id=pad,
                eos_token_id=eos,
                stopping_criteria=StoppingCriteriaList([tracker]),
                **settings.generate_kwargs(),
            )
    except Exception as exc:  # every request of the batch is told; the server goes on
        log.exception("generation failed for a batch of %d rows", len(rows))
        message = f"generation failed: {type(exc).__name__}: {exc}"
        for job in jobs:
            if not job.cancelled.is_set():
                job.emit(Failed(message))
        return len(rows)
    for row in rows:  # generate ended without the tracker ending these (the model's max_length)
        if not row.done:
            row.finish()
    return len(rows)
