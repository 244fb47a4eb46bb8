"""``lmforge export``: turn a LoRA adapter directory into a plain Transformers model directory."""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.main import app
from lmforge.errors import UserError


@app.command("export")
def export(
    model_dir: Path = typer.Argument(
        ..., metavar="MODEL_DIR", help="A LoRA adapter directory written by lmforge."
    ),
    merge: bool = typer.Option(False, "--merge", help="Fold the adapter into its base model."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write the merged model."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Load .bin/.pt weights (pickle can run code)."
    ),
) -> None:
    """Merge a LoRA adapter into its base model and write a plain Transformers directory
    (model.safetensors, config, tokenizer) that loads without lmforge or PEFT."""
    # Imported here so that `lmforge --help` does not pay for importing torch.
    from lmforge.models import ADAPTER_CONFIG, merge_and_export

    if not model_dir.is_dir():
        raise UserError(f"model directory {model_dir} does not exist")
    is_adapter = (model_dir / ADAPTER_CONFIG).is_file()
    if not merge:
        if is_adapter:
            raise UserError(
                f"{model_dir} is a LoRA adapter; pass --merge --out DIR to write it merged into "
                "its base model as a plain Transformers directory"
            )
        raise UserError(
            f"nothing to export: {model_dir} is not a LoRA adapter directory (no "
            f"{ADAPTER_CONFIG}); a plain model directory is already what export writes, so use "
            "it as it is (`lmforge export ADAPTER_DIR --merge --out DIR` merges adapters)"
        )
    if out is None:
        raise UserError("--merge needs --out DIR: where to write the merged model")
    written = merge_and_export(model_dir, out, overwrite=overwrite, allow_pickle=allow_pickle)
    typer.echo(f"wrote merged model to {written}")
