"""``lmforge tokenizer ...``: train tokenizers on your own data."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

import typer

from lmforge.cli.main import app
from lmforge.fsutil import refuse_to_overwrite

tokenizer_app = typer.Typer(help="Train tokenizers on your own data.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")


class Kind(str, Enum):
    bpe = "bpe"
    unigram = "unigram"


@tokenizer_app.command("train")
def train(
    sources: list[str] = typer.Option(
        ...,
        "--from",
        metavar="DATA",
        help="A file, directory or glob of JSONL, JSON, CSV, TSV, Parquet or text (repeatable).",
    ),
    fields: list[str] = typer.Option(
        [], "--field", help="Column to read from tabular data (repeatable; default: all text)."
    ),
    kind: Kind = typer.Option(..., "--kind", help="Byte-level BPE or byte-level Unigram."),
    vocab_size: int = typer.Option(..., "--vocab-size", help="Tokens in all, specials included."),
    min_frequency: int = typer.Option(
        2, "--min-frequency", help="BPE: merge only pairs seen at least this often."
    ),
    sentinels: int = typer.Option(100, "--sentinels", help="T5 <extra_id_N> tokens to add."),
    max_texts: int | None = typer.Option(
        None, "--max-texts", help="Train on a random sample of this many texts (see --seed)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the --max-texts sample."),
    out: Path = typer.Option(..., "--out", "-o", help="Tokenizer directory to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Train a tokenizer with lmforge's special tokens (pad, eos, unk, bos, CLS, SEP, MASK,
    T5 sentinels) and write it as a Transformers tokenizer directory."""
    # Imported here so that `lmforge --help` does not pay for importing transformers.
    from lmforge.data.loading import iter_texts, resolve_files
    from lmforge.tokenizers import SPECIAL_TOKENS, save_tokenizer, sentinel_tokens, train_tokenizer

    refuse_to_overwrite(out, overwrite)
    for source in sources:
        resolve_files(source)  # a missing or unreadable --from fails now, not after training
    read = [0]
    first: list[str] = []

    def texts() -> Iterator[str]:
        for source in sources:
            for text in iter_texts(source, fields or None):
                read[0] += 1
                if not first:
                    first.append(text)
                yield text

    tokenizer = train_tokenizer(
        texts(),
        kind=kind.value,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        num_sentinels=sentinels,
        max_texts=max_texts,
        seed=seed,
        show_progress=sys.stderr.isatty(),  # tokenizers prints stray newlines otherwise
    )
    save_tokenizer(tokenizer, out, overwrite=overwrite)

    used = read[0] if max_texts is None else min(read[0], max_texts)
    sampled = f" (a random sample of {read[0]:,} read)" if used < read[0] else ""
    reached = len(tokenizer)
    short = "" if reached == vocab_size else " (the corpus ran out of pieces to learn)"
    sample = first[0][:80]
    ids = tokenizer.encode(sample)
    pieces = " | ".join(tokenizer.decode([i]) for i in ids)
    typer.echo(f"trained a {kind.value} tokenizer on {used:,} texts{sampled}")
    typer.echo(f"vocabulary: {reached:,} tokens of the {vocab_size:,} asked for{short}")
    ids_of = tokenizer.convert_tokens_to_ids
    named = " ".join(f"{t}={ids_of(t)}" for t in SPECIAL_TOKENS.values())
    typer.echo(f"special tokens: {named}")
    if sentinels:
        last = sentinel_tokens(sentinels)[-1]
        typer.echo(f"sentinels: <extra_id_0>={ids_of('<extra_id_0>')} .. {last}={ids_of(last)}")
    typer.echo(f"sample: {sample!r} -> {len(ids)} tokens: {pieces}")
    typer.echo(f"wrote {out}")
    typer.echo(
        f'load it: AutoTokenizer.from_pretrained("{out}"), or in a run config '
        f"tokenizer: {{path: {out}}}"
    )
