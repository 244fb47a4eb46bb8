"""``lmforge generate MODEL_DIR``: one input, a prompt loop, or a whole dataset.

    lmforge generate runs/sum/final "A long article ..."
    lmforge generate runs/sum/final --interactive
    lmforge generate runs/sum/final --input test.jsonl --output predictions.jsonl

Inputs are rendered with the task template the model was fine-tuned with (its
``lmforge.json``), so a prompt is the same as in training.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lmforge.cli.data import _columns
from lmforge.cli.main import app
from lmforge.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lmforge.generation import DecodingSettings, Prompting

EXIT_WORDS = {"exit", "quit"}


@app.command("generate")
def generate(
    model_dir: Path = typer.Argument(
        ..., metavar="MODEL_DIR", help="A model directory (an lmforge run's final/ or any)."
    ),
    text: str | None = typer.Argument(
        None, metavar="TEXT", help="One input: the main field of the model's task."
    ),
    interactive: bool = typer.Option(
        False, "--interactive", "-i", help="Read inputs line by line from stdin."
    ),
    input_path: str | None = typer.Option(
        None, "--input", help="A dataset to generate for (any format lmforge reads)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="JSON Lines to write: the input rows plus `prediction`."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --output if it exists."),
    task: str | None = typer.Option(
        None, "--task", help="Task template to use (default: the one the model was tuned on)."
    ),
    column: list[str] = typer.Option(
        [], "--column", help="FIELD=COLUMN: read a template field from your column (repeatable)."
    ),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Generate at most this."),
    num_beams: int = typer.Option(1, "--num-beams", help="Beam search with this many beams."),
    length_penalty: float = typer.Option(
        1.0, "--length-penalty", help="Beam search: > 1 favours longer outputs."
    ),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of choosing the best."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature."),
    top_k: int = typer.Option(50, "--top-k", help="Sample from the k likeliest tokens (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Sample from this probability mass."),
    repetition_penalty: float = typer.Option(
        1.0, "--repetition-penalty", help="> 1 discourages repeating tokens."
    ),
    no_repeat_ngram_size: int = typer.Option(
        0, "--no-repeat-ngram-size", help="Never repeat an n-gram of this size (0: off)."
    ),
    n: int = typer.Option(1, "-n", help="Outputs per input (needs --sample or --num-beams >= n)."),
    stop: list[str] = typer.Option(
        [], "--stop", help="End an output at this string, which is cut (repeatable)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for sampling (reproducible)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Inputs generated together."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Load .bin/.pt weights (pickle can run code)."
    ),
) -> None:
    """Generate with a model: print the output for TEXT, answer lines from stdin with
    --interactive, or write predictions for every row of --input to --output."""
    from lmforge.generation import (
        DecodingSettings,
        prompting_for,
        read_inputs,
        write_predictions,
    )

    modes = [m for m, on in (("TEXT", text is not None), ("--interactive", interactive)) if on]
    modes += ["--input"] if input_path is not None else []
    if len(modes) != 1:
        raise UserError(
            "give exactly one of TEXT, --interactive or --input FILE"
            + (f" (got {' and '.join(modes)})" if modes else "")
        )
    if (input_path is None) != (output is None):
        raise UserError("--input and --output go together: --input FILE --output FILE.jsonl")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    settings = DecodingSettings(
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        num_return_sequences=n,
        do_sample=sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        length_penalty=length_penalty,
        stop=stop,
        seed=seed,
    )
    settings.check()
    columns = _columns(column)
    if columns and input_path is None:
        raise UserError("--column maps columns of an --input dataset; TEXT is the main field")
    if text is not None and not text.strip():
        raise UserError("TEXT is empty: give the input to generate for")
    prompting = prompting_for(model_dir, task)
    # Every mistake in the inputs is reported before the model loads.
    if output is not None:
        from lmforge.fsutil import refuse_to_overwrite

        refuse_to_overwrite(output, overwrite)
    if input_path is not None:
        rows, sources = read_inputs(input_path, prompting, columns)
    model, tokenizer = _load(model_dir, allow_pickle)
    if input_path is not None and output is not None:
        count = write_predictions(
            model,
            tokenizer,
            rows,
            sources,
            output,
            settings,
            batch_size=batch_size,
            max_source_length=prompting.max_source_length,
            overwrite=overwrite,
            progress=True,
        )
        typer.echo(f"wrote {count} predictions to {output}", err=True)
    elif interactive:
        if sys.stdin.isatty():
            typer.echo("Type an input and press Enter; an empty line or `exit` ends.", err=True)
        while True:
            if sys.stdin.isatty():
                typer.echo("> ", nl=False, err=True)
            line = sys.stdin.readline()
            if not line or not line.strip() or line.strip().lower() in EXIT_WORDS:
                break
            _answer(model, tokenizer, line.rstrip("\n"), prompting, settings)
    elif text is not None:
        _answer(model, tokenizer, text, prompting, settings)


def _load(model_dir: Path, allow_pickle: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from lmforge.generation import load_generator

    return load_generator(model_dir, allow_pickle=allow_pickle)


def _answer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    prompting: Prompting,
    settings: DecodingSettings,
) -> None:
    """Print the output(s) for one input: streamed as produced when there is a single one."""
    from lmforge.generation import generate, render_rows, stream

    source = render_rows([{_main_field(prompting): text}], prompting, where="input")[0]
    if settings.num_beams == 1 and settings.num_return_sequences == 1:
        for piece in stream(
            model, tokenizer, source, settings, max_source_length=prompting.max_source_length
        ):
            typer.echo(piece, nl=False)
        typer.echo()
        return
    group = generate(
        model, tokenizer, [source], settings, max_source_length=prompting.max_source_length
    )[0]
    for number, generation in enumerate(group, start=1):
        typer.echo(f"[{number}] {generation.text}")


def _main_field(prompting: Prompting) -> str:
    from lmforge.data.templates import task_fields

    return task_fields(prompting.task).source[0]
