"""Decoding with the encoding the model was trained on: batched, streamed, or over a file.

Prompts are encoded exactly as the fine-tuning objective encoded sources
(:func:`lmforge.objectives.sft.seq2seq_source_ids` / ``causal_prompt_ids``), sorted by
length so a batch wastes little padding (seq2seq pads on the right, causal on the left so new
tokens follow the prompt), generated with ``model.generate``, and returned in the caller's
order. Causal models return only the new text, never the prompt. Every decoding strategy is
Hugging Face's own (greedy, beam search, sampling with temperature / top-k / top-p, repetition
penalties); lmforge adds stop strings, the finish reason and token counts a server reports,
per-call seeds, streaming that stops when its reader does, and whole-file prediction.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any, Literal

import torch
from tqdm.auto import tqdm
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from lmforge.config import TemplateConfig
from lmforge.errors import UserError
from lmforge.models import model_kind
from lmforge.objectives.sft import causal_prompt_ids, seq2seq_source_ids

FinishReason = Literal["stop", "length"]


@dataclass
class DecodingSettings:
    """The decoding strategy; ``seed`` makes sampling reproducible without global state.

    ``stop`` strings end a sequence at their first occurrence (the text is cut before it);
    ``num_return_sequences`` sequences come back per source (beams, or independent samples).
    """

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    num_beams: int = 1
    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0
    early_stopping: bool = False
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # stop="###" means one stop string, not three
            self.stop = [self.stop]
        self.stop = list(self.stop)

    def check(self) -> None:
        """Raise a UserError naming the first setting out of range."""
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise UserError(
                f"min_new_tokens must be between 0 and max_new_tokens ({self.max_new_tokens}), "
                f"got {self.min_new_tokens}"
            )
        if self.num_beams < 1:
            raise UserError(f"num_beams must be at least 1, got {self.num_beams}")
        if self.num_return_sequences < 1:
            raise UserError(
                f"num_return_sequences (-n) must be at least 1, got {self.num_return_sequences}"
            )
        if self.num_return_sequences > 1 and not self.do_sample:
            if self.num_return_sequences > self.num_beams:
                raise UserError(
                    f"num_return_sequences {self.num_return_sequences} needs sampling (--sample) "
                    f"or at least as many beams (num_beams is {self.num_beams})"
                )
        if self.do_sample and self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise UserError(
                f"num_return_sequences {self.num_return_sequences} is more than num_beams "
                f"{self.num_beams}"
            )
        if self.do_sample and self.temperature <= 0:
            raise UserError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.top_k < 0:
            raise UserError(f"top_k must be 0 (off) or more, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise UserError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.no_repeat_ngram_size < 0:
            raise UserError(
                f"no_repeat_ngram_size must be 0 (off) or more, got {self.no_repeat_ngram_size}"
            )
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise UserError(f"stop strings must be non-empty strings, got {self.stop!r}")

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate``: only those the strategy uses."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "num_return_sequences": self.num_return_sequences,
            "do_sample": self.do_sample,
            "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
        }
        if self.min_new_tokens:
            kwargs["min_new_tokens"] = self.min_new_tokens
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        if self.num_beams > 1:
            kwargs.update(length_penalty=self.length_penalty, early_stopping=self.early_stopping)
        return kwargs


@dataclass(frozen=True)
class Generation:
    """One generated sequence: its text (cut before any stop string), why it ended ("stop":
    end-of-sequence token or stop string; "length": max_new_tokens), and token counts
    (``completion_tokens`` includes the eos token when one was generated)."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


def encode_prompt(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    max_source_length: int,
    raw: bool = False,
) -> list[int]:
    """The token ids the model sees for ``source`` (a rendered task template). ``raw`` sends a
    causal model the text's own tokens, without the fine-tuning separator (code completion
    of a prompt as given, e.g. HumanEval)."""
    if model_kind(model) == "seq2seq":
        return seq2seq_source_ids(tokenizer, source, max_source_length)
    if raw:
        return tokenizer(source, add_special_tokens=False)["input_ids"][-max_source_length:]
    return causal_prompt_ids(tokenizer, source)[-max_source_length:]


# --------------------------------------------------------------------------- stopping


class StopOnText(StoppingCriteria):
    """Finish each row whose new text contains a stop string.

    Written here rather than using ``generate(stop_strings=...)``: transformers' criterion
    matches stop strings against the end of the whole sequence, prompt included, so a stop
    string could be completed by prompt text, and it reports nothing about where the match
    is. Decoding the new tokens of each row gives exactly the text that is returned and cut.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, stops: Sequence[str], prompt_width: int
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = list(stops)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        # input_ids: (rows, prompt_width + new tokens so far); rows = batch x beams or samples
        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_width :], skip_special_tokens=True
        )
        hits = [first_stop(text, self.stops) is not None for text in texts]
        return torch.tensor(hits, dtype=torch.bool, device=input_ids.device)


class StopOnEvent(StoppingCriteria):
    """Finish every row once ``event`` is set: how a stream's reader cancels generation."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest occurrence of any stop string in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def finish_generation(
    tokenizer: PreTrainedTokenizerBase,
    new_ids: list[int],
    eos: int,
    stops: Sequence[str],
    prompt_tokens: int,
) -> Generation:
    """Turn one row of generated ids into a Generation: cut at eos, then at a stop string."""
    end = new_ids.index(eos) if eos in new_ids else None
    tokens = new_ids if end is None else new_ids[:end]
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    cut = first_stop(text, stops)
    if cut is not None:
        # The fewest tokens whose text holds the stop string (decoded prefixes only grow).
        low, high = 1, len(tokens)
        while low < high:
            mid = (low + high) // 2
            if first_stop(tokenizer.decode(tokens[:mid], skip_special_tokens=True), stops) is None:
                low = mid + 1
            else:
                high = mid
        return Generation(text[:cut], "stop", prompt_tokens, low)
    if end is not None:
        return Generation(text, "stop", prompt_tokens, end + 1)
    return Generation(text, "length", prompt_tokens, len(tokens))


# --------------------------------------------------------------------------- batches
# These helpers are public because the server's continuous batches (lmforge.serve.batch)
# pad, seed and finish rows exactly as ``generate`` does.


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch for the block; the RNG state of the CPU (and ``device``) is restored after."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def for_inference(model: PreTrainedModel) -> Iterator[None]:
    """Eval mode (no dropout) for the block; the model's training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """(pad, eos): generation stops at the eos the model was trained with."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no eos_token: generation would not know where to stop")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return int(pad), int(eos)


def _prompt_budget(model: PreTrainedModel, max_source_length: int, max_new_tokens: int) -> int:
    """Prompt tokens a causal model can take so that prompt + new tokens fit its positions."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is None or model_kind(model) == "seq2seq":
        return max_source_length
    budget = min(max_source_length, limit - max_new_tokens)
    if budget < 1:
        raise UserError(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt: the model has "
            f"{limit} positions"
        )
    return budget


def pad_prompts(
    prompts: list[list[int]], pad: int, left: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (len(prompts), longest prompt)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        cols = slice(width - len(prompt), width) if left else slice(0, len(prompt))
        ids[row, cols] = torch.tensor(prompt, dtype=torch.long)
        mask[row, cols] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str],
    settings: DecodingSettings | None = None,
    *,
    batch_size: int = 16,
    max_source_length: int = 512,
    progress: bool = False,
    raw: bool = False,
) -> list[list[Generation]]:
    """``settings.num_return_sequences`` generations per source, in the input order.

    Sources are batched longest first, so each batch holds prompts of similar length.
    ``progress`` shows a progress bar on stderr.
    """
    settings = settings or DecodingSettings()
    settings.check()
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    seq2seq = model_kind(model) == "seq2seq"
    pad, eos = special_ids(tokenizer)
    budget = _prompt_budget(model, max_source_length, settings.max_new_tokens)
    encoded = [encode_prompt(model, tokenizer, s, budget, raw) for s in sources]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    n = settings.num_return_sequences
    results: list[list[Generation]] = [[] for _ in encoded]
    device = next(model.parameters()).device
    bar = tqdm(total=len(encoded), desc="generating", unit="input", disable=not progress)
    with bar, for_inference(model), seeded(settings.seed, device):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = pad_prompts([encoded[i] for i in chunk], pad, not seq2seq, device)
            # seq2seq output starts with the decoder start token; causal output with the prompt
            prompt_width = 1 if seq2seq else ids.shape[1]
            criteria = StoppingCriteriaList(
                [StopOnText(tokenizer, settings.stop, prompt_width)] if settings.stop else []
            )
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                pad_token_id=pad,
                eos_token_id=eos,
                stopping_criteria=criteria,
                **settings.generate_kwargs(),
            )
            # out: (len(chunk) * n, prompt_width + new tokens), the n sequences of a source together
            for row, new_ids in enumerate(out[:, prompt_width:].tolist()):
                i = chunk[row // n]
                results[i].append(
                    finish_generation(tokenizer, new_ids, eos, settings.stop, len(encoded[i]))
                )
            bar.update(len(chunk))
    return results


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: list[str],
    settings: DecodingSettings | None = None,
    *,
    batch_size: int = 16,
    max_source_length: int = 512,
) -> list[str]:
    """One text per source (the first of its sequences), stripped, in the input order."""
    generations = generate(
        model,
        tokenizer,
        sources,
        settings,
        batch_size=batch_size,
        max_source_length=max_source_length,
    )
    return [group[0].text.strip() for group in generations]


# --------------------------------------------------------------------------- streaming


class _TokenQueue(BaseStreamer):
    """Hands each step's new token ids from the generating thread to the reader.

    Used instead of transformers' TextIteratorStreamer, which holds back text that has no
    letters until a space arrives (code, punctuation, an untrained model: possibly the whole
    output) and keeps no ids, which the finish reason and token count need.
    """

    def __init__(self) -> None:
        self.queue: Queue[list[int] | None] = Queue()
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first call hands over the prompt (decoder start)
            self.prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(None)


class TextStream(Iterator[str]):
    """Text pieces as the model produces them; ``result`` is the whole Generation once the
    stream is exhausted. Closing it (or dropping it, or leaving a ``with`` block) early stops
    generation and waits for the generating thread to end."""

    def __init__(self, pieces: Generator[str, None, Generation]) -> None:
        self._pieces = pieces
        self.result: Generation | None = None

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as done:
            self.result = done.value
            raise StopIteration from None

    def close(self) -> None:
        self._pieces.close()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    settings: DecodingSettings | None = None,
    *,
    max_source_length: int = 512,
) -> TextStream:
    """Generate one sequence for ``source`` and yield its text piece by piece.

    The pieces join to exactly the text :func:`generate` returns with the same settings (a
    piece that might begin a stop string is held back until it is known not to). The model
    runs in a thread that hands over each new token (a transformers streamer); the reader
    stopping early sets a flag that a stopping criterion checks every step, so the thread
    ends within one step.
    """
    settings = settings or DecodingSettings()
    settings.check()
    if settings.num_beams > 1 or settings.num_return_sequences > 1:
        raise UserError(
            "streaming produces one sequence: num_beams and num_return_sequences must be 1"
        )
    return TextStream(_stream_pieces(model, tokenizer, source, settings, max_source_length))


def _stream_pieces(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    settings: DecodingSettings,
    max_source_length: int,
) -> Generator[str, None, Generation]:
    seq2seq = model_kind(model) == "seq2seq"
    pad, eos = special_ids(tokenizer)
    budget = _prompt_budget(model, max_source_length, settings.max_new_tokens)
    prompt = encode_prompt(model, tokenizer, source, budget)
    device = next(model.parameters()).device
    ids, mask = pad_prompts([prompt], pad, not seq2seq, device)
    tokens = _TokenQueue()
    cancel = threading.Event()
    criteria = [StopOnEvent(cancel)]
    if settings.stop:
        criteria.append(StopOnText(tokenizer, settings.stop, 1 if seq2seq else ids.shape[1]))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with torch.no_grad(), seeded(settings.seed, device):
                model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    pad_token_id=pad,
                    eos_token_id=eos,
                    streamer=tokens,
                    stopping_criteria=StoppingCriteriaList(criteria),
                    **settings.generate_kwargs(),
                )
        except BaseException as exc:  # handed to the reader, which is waiting on the queue
            failure.append(exc)
            tokens.end()

    # Without a stop string yet, one may still begin in the last ``hold`` characters.
    hold = max((len(s) for s in settings.stop), default=1) - 1
    new_ids: list[int] = []
    emitted = 0
    thread = threading.Thread(target=run, name="lmforge-stream", daemon=True)
    with for_inference(model):
        thread.start()
        try:
            while (step := tokens.queue.get()) is not None:
                new_ids.extend(step)
                # Decode everything so far: a character split over tokens shows as U+FFFD
                # until its last byte arrives (a UTF-8 character has at most 3 more), so up to
                # 3 trailing ones are held back; earlier ones are invalid bytes for good.
                text = tokenizer.decode(new_ids, skip_special_tokens=True)
                pending = min(3, len(text) - len(text.rstrip("\ufffd")))
                cut = first_stop(text, settings.stop)
                limit = cut if cut is not None else len(text) - pending - hold
                if limit > emitted:
                    yield text[emitted:limit]
                    emitted = limit
                if cut is not None:
                    break
            thread.join()
        finally:
            cancel.set()
            thread.join()
    if failure:
        raise failure[0]
    result = finish_generation(tokenizer, new_ids, eos, settings.stop, len(prompt))
    if len(result.text) > emitted:
        yield result.text[emitted:]
    return result


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class Prompting:
    """How a model's inputs are made: its task template and the source length it was
    trained with (from the model card ``lmforge.json``; plain text for other models)."""

    task: str = "text"
    template: TemplateConfig = field(default_factory=TemplateConfig)
    max_source_length: int = 512


def prompting_for(model_dir: str | Path, task: str | None = None) -> Prompting:
    """The Prompting of the model in ``model_dir``; ``task`` overrides the card's task."""
    from lmforge.data.templates import task_fields
    from lmforge.runs import read_model_card

    card = read_model_card(model_dir) if Path(model_dir).is_dir() else {}
    entries = [e for e in card.get("tasks", []) if isinstance(e, dict) and e.get("task")]
    trained = list(dict.fromkeys(e["task"] for e in entries))
    if task is None:
        if len(trained) > 1:
            raise UserError(
                f"{model_dir} was fine-tuned on several tasks ({', '.join(trained)}); "
                "choose one with --task"
            )
        task = trained[0] if trained else "text"
    task_fields(task)  # an unknown task names the valid ones
    template = next(
        (TemplateConfig(**e.get("template", {})) for e in entries if e["task"] == task),
        TemplateConfig(),
    )
    return Prompting(task, template, int(card.get("max_source_length", 512)))


def render_rows(
    rows: Iterable[dict[str, Any]],
    prompting: Prompting,
    columns: dict[str, str] | None = None,
    where: str = "input",
) -> list[str]:
    """The model input of each row; ``columns`` maps template fields to the row's columns.
    A row without the task's main field is reported as ``WHERE row N``."""
    from lmforge.data.templates import render_source, task_fields

    columns = columns or {}
    fields = task_fields(prompting.task)
    unknown = sorted(set(columns) - set(fields.source + fields.optional))
    if unknown:
        valid = ", ".join(fields.source + fields.optional)
        raise UserError(
            f"--column {unknown[0]}: not an input field of task {prompting.task} (fields: {valid})"
        )
    main = fields.source[0]
    sources = []
    for number, row in enumerate(rows, start=1):
        mapped = {**row, **{f: row.get(c) for f, c in columns.items()}}
        value = mapped.get(main)
        if value is None or (isinstance(value, str) and not value.strip()):
            column = columns.get(main, main)
            raise UserError(
                f"{where} row {number}: task {prompting.task} needs the field {main!r} "
                f"(column {column!r}), which is missing or empty; columns: {', '.join(row)}",
                hint=f"map one with --column {main}=COLUMN",
            )
        sources.append(render_source(prompting.task, mapped, prompting.template))
    return sources


def read_inputs(
    path: str | Path, prompting: Prompting, columns: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, model inputs) of a dataset in any format lmforge reads."""
    import datasets

    from lmforge.data.loading import load_path

    # Converting one input file is quick; its progress bar would only garble error output.
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        rows = list(load_path(path))
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    return rows, render_rows(rows, prompting, columns, where=str(path))


def write_predictions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict[str, Any]],
    sources: Sequence[str],
    output_path: str | Path,
    settings: DecodingSettings,
    *,
    batch_size: int = 16,
    max_source_length: int = 512,
    overwrite: bool = False,
    progress: bool = False,
) -> int:
    """Generate for ``sources`` and write JSON Lines to ``output_path`` atomically: each row
    plus ``prediction`` (and ``predictions``, all ``num_return_sequences`` of them, when
    there are several). Returns the number of rows written."""
    from lmforge.fsutil import refuse_to_overwrite, write_jsonl_atomic

    refuse_to_overwrite(Path(output_path), overwrite)
    generations = generate(
        model,
        tokenizer,
        sources,
        settings,
        batch_size=batch_size,
        max_source_length=max_source_length,
        progress=progress,
    )

    def outputs() -> Iterator[dict[str, Any]]:
        for row, group in zip(rows, generations, strict=True):
            texts = [g.text.strip() for g in group]
            extra: dict[str, Any] = {"prediction": texts[0]}
            if len(texts) > 1:
                extra["predictions"] = texts
            yield {**row, **extra}

    return write_jsonl_atomic(output_path, outputs())


def load_generator(
    model_dir: str | Path, *, allow_pickle: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model that can generate, and its tokenizer; an encoder (masked LM) is refused."""
    from lmforge.models import load_pretrained

    model, tokenizer = load_pretrained(model_dir, allow_pickle=allow_pickle)
    if model_kind(model) == "encoder":
        raise UserError(
            f"{model_dir} holds an encoder (masked LM), which cannot generate text; "
            "use a seq2seq (t5) or causal (gpt2, llama) model"
        )
    return model, tokenizer
