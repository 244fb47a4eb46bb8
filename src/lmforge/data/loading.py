"""Load task data through ``datasets`` (memory-mapped Arrow), after cheap checks of our own.

``datasets`` reports a malformed file as a long traceback from deep inside pyarrow or pandas.
So before handing files over we scan them ourselves: UTF-8 decodability (with the byte offset
of the first bad byte), one JSON object per JSONL line (file:line), readable Parquet footers,
and that there is at least one row. After loading, the fields a task needs are checked column
by column with pyarrow, and the first missing or empty value is reported with its file and row.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmforge.config import DataSource
from lmforge.data.templates import task_fields
from lmforge.errors import UserError

Rows = datasets.Dataset | datasets.IterableDataset

SUFFIX_FORMAT = {
    ".jsonl": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".txt": "text",
    ".text": "text",
    ".arrow": "arrow",
}
# lmforge format -> (datasets builder, builder options)
BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "jsonl": ("json", {}),
    "json": ("json", {}),
    "csv": ("csv", {}),
    "tsv": ("csv", {"sep": "\t"}),
    "parquet": ("parquet", {}),
    "text": ("text", {}),
    "arrow": ("arrow", {}),
}
_SUFFIXES = ", ".join(SUFFIX_FORMAT)


# --------------------------------------------------------------------------- finding files


def _is_saved_dataset(path: Path) -> bool:
    """A directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _visible_files(directory: Path) -> list[Path]:
    if not os.access(directory, os.R_OK | os.X_OK):
        raise UserError(f"cannot read directory {directory}: permission denied")
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def _pick_format(files: list[Path], fmt: str, where: str) -> tuple[str, list[Path]]:
    """Choose the files of one format among ``files`` (all of them for explicit ``text``)."""
    if fmt == "text":
        chosen = files
    elif fmt != "auto":
        chosen = [f for f in files if SUFFIX_FORMAT.get(f.suffix.lower()) == fmt]
    else:
        found = sorted(
            {SUFFIX_FORMAT[f.suffix.lower()] for f in files if f.suffix.lower() in SUFFIX_FORMAT}
        )
        if len(found) > 1:
            raise UserError(
                f"{where} holds files of several formats ({', '.join(found)}); "
                "point the path at one format, e.g. with a glob such as DIR/*.jsonl"
            )
        fmt = found[0] if found else fmt
        chosen = [f for f in files if SUFFIX_FORMAT.get(f.suffix.lower()) == fmt]
    if not chosen:
        wanted = f"{fmt} files" if fmt != "auto" else f"data files ({_SUFFIXES})"
        raise UserError(f"{where}: no {wanted} found")
    return fmt, chosen


def resolve_files(path: str | Path, fmt: str = "auto") -> tuple[str, list[Path]]:
    """The format and the sorted files behind ``path`` (a file, a glob or a directory).

    A ``save_to_disk`` directory comes back as format ``"saved"`` with the directory itself.
    """
    text = str(path)
    if any(ch in text for ch in "*?["):
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True)) if Path(m).is_file()]
        if not matches:
            raise UserError(f"no files match {text}")
        return _pick_format(matches, fmt, text)
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.is_dir():
        if _is_saved_dataset(path):
            return "saved", [path]
        return _pick_format(_visible_files(path), fmt, str(path))
    if fmt == "auto":
        fmt = SUFFIX_FORMAT.get(path.suffix.lower(), "")
        if not fmt:
            raise UserError(
                f"{path}: cannot tell the format from the extension {path.suffix or '(none)'!r}; "
                f"known extensions: {_SUFFIXES}; or set the format (e.g. format: text)"
            )
    return fmt, [path]


# --------------------------------------------------------------------------- checking files


def _lines(file: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) of a UTF-8 file; a bad byte is reported by its offset."""
    offset = 0
    try:
        with open(file, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad = offset + exc.start
                    raise UserError(
                        f"{file}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte offset {bad}, "
                        f"line {number}); convert it, e.g. with iconv -t UTF-8"
                    ) from None
                offset += len(raw)
    except OSError as exc:
        raise UserError(f"cannot read {file}: {exc.strerror or exc}") from None


def _scan_jsonl(file: Path) -> int:
    rows = 0
    for number, line in _lines(file):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{file}:{number}: invalid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        if not isinstance(value, dict):
            raise UserError(
                f"{file}:{number}: expected one JSON object per line, got {type(value).__name__}"
            )
        rows += 1
    return rows


def _scan_json(file: Path) -> int:
    text = "".join(line for _, line in _lines(file))
    if not text.strip():
        return 0
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several top-level values: JSON Lines named .json
            return _scan_jsonl(file)
        raise UserError(
            f"{file}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
        ) from None
    if not isinstance(value, list):
        raise UserError(
            f"{file}: expected a list of objects or JSON Lines, got {type(value).__name__}"
        )
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise UserError(
                f"{file}: item {index} of the list is {type(item).__name__}, not an object"
            )
    return len(value)


def _scan_delimited(file: Path) -> int:
    # Counts non-blank lines after the header: an estimate (quoted newlines), used only for
    # "is there any row at all"; pandas parses the file itself.
    return max(0, sum(1 for _, line in _lines(file) if line.strip()) - 1)


def _scan_text(file: Path) -> int:
    return sum(1 for _, line in _lines(file) if line.strip())


def _scan_parquet(file: Path) -> int:
    try:
        return pq.ParquetFile(file).metadata.num_rows
    except OSError as exc:
        raise UserError(f"cannot read {file}: {exc.strerror or exc}") from None
    except pa.ArrowException as exc:
        raise UserError(f"{file}: not a Parquet file ({exc})") from None


def _scan_arrow(file: Path) -> int:
    if not os.access(file, os.R_OK):
        raise UserError(f"cannot read {file}: permission denied")
    return 1  # rows are counted after loading


SCANNERS: dict[str, Callable[[Path], int]] = {
    "jsonl": _scan_jsonl,
    "json": _scan_json,
    "csv": _scan_delimited,
    "tsv": _scan_delimited,
    "parquet": _scan_parquet,
    "text": _scan_text,
    "arrow": _scan_arrow,
}


# --------------------------------------------------------------------------- loading


def _load_files(fmt: str, files: list[Path], text_unit: str, streaming: bool) -> Rows:
    builder, options = BUILDERS[fmt]
    if fmt == "text":
        options = {"sample_by": "document" if text_unit == "file" else "line"}
    try:
        return datasets.load_dataset(
            builder,
            data_files=[str(f) for f in files],
            split="train",
            streaming=streaming,
            **options,
        )
    except datasets.exceptions.DatasetGenerationError as exc:
        lines = str(exc.__cause__ or exc).strip().splitlines() or ["unknown error"]
        reason = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        where = files[0] if len(files) == 1 else f"{files[0].parent} ({len(files)} {fmt} files)"
        raise UserError(f"{where}: cannot read as {fmt}: {reason}") from None


def _load_saved(directory: Path, streaming: bool) -> Rows:
    loaded = datasets.load_from_disk(str(directory))
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise UserError(
                f"{directory} holds the splits {', '.join(loaded)}; point the path at one of them, "
                f"e.g. {directory / next(iter(loaded))}"
            )
        loaded = next(iter(loaded.values()))
    return loaded.to_iterable_dataset() if streaming else loaded


def load_path(
    path: str | Path, format: str = "auto", text_unit: str = "line", streaming: bool = False
) -> Rows:
    """Raw rows of a file, glob or directory (no task checks). Blank plain-text rows are dropped.

    ``streaming`` returns an IterableDataset that reads lazily (for corpora too large to
    convert to Arrow first); otherwise a memory-mapped Dataset.
    """
    fmt, files = resolve_files(path, format)
    if fmt == "saved":
        rows = _load_saved(files[0], streaming)
    else:
        found = sum(SCANNERS[fmt](f) for f in files)
        if found == 0:
            raise UserError(f"{path}: the dataset is empty (no rows in {len(files)} file(s))")
        rows = _load_files(fmt, files, text_unit, streaming)
        if fmt == "text":
            rows = rows.filter(lambda batch: [bool(t.strip()) for t in batch["text"]], batched=True)
    if not streaming and len(rows) == 0:
        raise UserError(f"{path}: the dataset is empty (no rows)")
    return rows


def _apply_columns(rows: Rows, source: DataSource) -> Rows:
    """Rename the user's columns to template field names (``columns: {field: column}``)."""
    fields = task_fields(source.task)
    allowed = set(fields.all) | {"provenance"} | ({source.split.group_by} - {None})
    unknown = sorted(set(source.columns) - allowed)
    if unknown:
        raise UserError(
            f"columns: {', '.join(unknown)} is not a field of task {source.task} "
            f"(fields: {', '.join(sorted(allowed))})"
        )
    present = rows.column_names or []
    renames = {col: field for field, col in source.columns.items() if col != field}
    for col, field in renames.items():
        if rows.column_names is not None and col not in present:
            raise UserError(
                f"{source.path}: column {col!r} (mapped to field {field!r}) not found; "
                f"columns: {', '.join(present)}"
            )
    clashing = [field for field in renames.values() if field in present and field not in renames]
    if clashing:
        rows = rows.remove_columns(clashing)
    return rows.rename_columns(renames) if renames else rows


def _bad_value(values: pa.ChunkedArray) -> int | None:
    """Index of the first null or blank value (blank only for string columns), else None."""
    bad = pc.is_null(values)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0)
        bad = pc.or_(bad, pc.fill_null(blank, True))
    index = pc.index(bad, True).as_py()
    return None if index < 0 else index


def _where(source: DataSource, index: int) -> str:
    """'FILE row N' for the global row ``index`` (1-based N, header not counted)."""
    fmt, files = resolve_files(source.path, source.format)
    if fmt == "saved" or len(files) == 1:
        return f"{files[0]} row {index + 1}"
    start = 0
    for file in files:  # only on the error path: load files one by one to find the row
        size = len(_load_files(fmt, [file], source.text_unit, streaming=False))
        if index < start + size:
            return f"{file} row {index - start + 1}"
        start += size
    return f"{source.path} row {index + 1}"


def _missing_field_error(source: DataSource, field: str, present: list[str]) -> UserError:
    mapped = f" (mapped from column {source.columns[field]!r})" if field in source.columns else ""
    return UserError(
        f"{source.path}: task {source.task} needs the field {field!r}{mapped}; "
        f"columns: {', '.join(present)}",
        hint=f"map one with --column {field}=COLUMN or columns: {{{field}: COLUMN}}",
    )


def _check_fields(rows: datasets.Dataset, source: DataSource) -> None:
    table = rows.with_format("arrow")
    for field in task_fields(source.task).required:
        if field not in rows.column_names:
            raise _missing_field_error(source, field, rows.column_names)
        for start in range(0, len(rows), 1_000_000):  # bounded memory on huge corpora
            values = table[start : start + 1_000_000][field]
            index = _bad_value(values)
            if index is not None:
                what = "missing or empty" if values[index].as_py() is None else "empty"
                where = _where(source, start + index)
                raise UserError(f"{where}: field {field!r} is {what}")


def _check_streamed_row(source: DataSource) -> Callable[[dict[str, Any], int], dict[str, Any]]:
    required = task_fields(source.task).required

    def check(row: dict[str, Any], index: int) -> dict[str, Any]:
        for field in required:
            if field not in row:
                raise _missing_field_error(source, field, list(row))
            value = row[field]
            if value is None or (isinstance(value, str) and not value.strip()):
                what = "missing or empty" if value is None else "empty"
                raise UserError(f"{source.path} row {index + 1}: field {field!r} is {what}")
        return row

    return check


def load_source(source: DataSource, *, streaming: bool = False) -> Rows:
    """Load one configured source: columns mapped, task fields checked, ``max_rows`` applied.

    With ``streaming`` the rows are checked lazily, as they are read.
    """
    rows = _apply_columns(
        load_path(source.path, source.format, source.text_unit, streaming), source
    )
    if streaming:
        if source.max_rows is not None:
            rows = rows.take(source.max_rows)
        return rows.map(_check_streamed_row(source), with_indices=True)
    if source.max_rows is not None and source.max_rows < len(rows):
        rows = rows.select(range(source.max_rows))
    _check_fields(rows, source)
    return rows


def iter_texts(path: str | Path, fields: list[str] | None = None) -> Iterator[str]:
    """Every text in a file, glob or directory, e.g. to train a tokenizer.

    Plain text yields each line (or document); tabular data yields the named ``fields``, or
    else every string column, of each row, each non-empty value as its own text.
    """
    rows = load_path(path)
    if fields is None:
        fields = [
            name
            for name, feature in rows.features.items()
            if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
        ]
    missing = [f for f in fields if f not in rows.column_names]
    if missing:
        raise UserError(
            f"{path}: no column {', '.join(map(repr, missing))}; columns: {', '.join(rows.column_names)}"
        )
    if not fields:
        raise UserError(f"{path}: no text columns; columns: {', '.join(rows.column_names)}")
    for batch in rows.select_columns(fields).iter(batch_size=1000):
        for values in zip(*(batch[f] for f in fields), strict=True):
            for value in values:
                if isinstance(value, str) and value.strip():
                    yield value
