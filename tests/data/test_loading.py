from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.config import DataSource
from lmforge.data.loading import iter_texts, load_path, load_source
from lmforge.errors import UserError

ROWS = [
    {"document": "the cat sat on the mat", "summary": "cat sat"},
    {"document": "一只猫坐在垫子上", "summary": "猫坐"},
    {"document": "dogs bark at night", "summary": "dogs bark"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def write_delimited(path: Path, rows: list[dict], sep: str) -> Path:
    lines = [sep.join(rows[0])] + [sep.join(r.values()) for r in rows]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "tsv", "parquet"])
def test_tabular_formats_load_the_same_rows(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, ROWS)
    elif suffix == "json":
        path.write_text(json.dumps(ROWS, ensure_ascii=False), "utf-8")
    elif suffix in ("csv", "tsv"):
        write_delimited(path, ROWS, "," if suffix == "csv" else "\t")
    else:
        pq.write_table(pa.Table.from_pylist(ROWS), path)

    ds = load_source(DataSource(path=str(path), task="summarize"))

    assert isinstance(ds, datasets.Dataset)
    assert ds.to_list() == ROWS


def test_plain_text_one_row_per_nonblank_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("first line\n\n   \nsecond 行\n", "utf-8")

    assert load_path(path)["text"] == ["first line", "second 行"]


def test_plain_text_one_row_per_file_in_a_directory(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "a.txt").write_text("doc a\nline 2\n", "utf-8")
    (tmp_path / "src" / "pkg" / "b.txt").write_text("doc b\n", "utf-8")
    (tmp_path / "src" / ".hidden.txt").write_text("skipped\n", "utf-8")

    ds = load_source(DataSource(path=str(tmp_path / "src"), text_unit="file"))

    assert ds["text"] == ["doc a\nline 2\n", "doc b\n"]


def test_explicit_text_format_reads_files_of_any_extension(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def f():\n    return 1\n", "utf-8")

    ds = load_path(tmp_path, format="text", text_unit="file")

    assert ds["text"] == ["def f():\n    return 1\n"]


def test_streaming_plain_text_is_lazy(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("a\n\nb\n", "utf-8")

    rows = load_source(DataSource(path=str(tmp_path / "c.txt")), streaming=True)

    assert isinstance(rows, datasets.IterableDataset)
    assert [r["text"] for r in rows] == ["a", "b"]


def test_save_to_disk_directory_and_glob(tmp_path: Path) -> None:
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    write_jsonl(tmp_path / "part-1.jsonl", ROWS[:2])
    write_jsonl(tmp_path / "part-2.jsonl", ROWS[2:])

    saved = load_source(DataSource(path=str(tmp_path / "saved"), task="summarize"))
    globbed = load_source(DataSource(path=str(tmp_path / "part-*.jsonl"), task="summarize"))

    assert saved.to_list() == ROWS
    assert globbed.to_list() == ROWS


def test_columns_map_user_fields_and_max_rows_limits(tmp_path: Path) -> None:
    rows = [{"body": r["document"], "tldr": r["summary"], "document": "ignored"} for r in ROWS]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    source = DataSource(
        path=str(path),
        task="summarize",
        columns={"document": "body", "summary": "tldr"},
        max_rows=2,
    )

    ds = load_source(source)

    assert ds.to_list() == ROWS[:2]


def test_iter_texts_yields_each_string_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"a": "x", "n": 1, "b": "y"}, {"a": "z", "b": ""}])
    (tmp_path / "t.txt").write_text("one\n\ntwo\n", "utf-8")

    assert list(iter_texts(path)) == ["x", "y", "z"]
    assert list(iter_texts(path, fields=["b"])) == ["y"]
    assert list(iter_texts(tmp_path / "t.txt")) == ["one", "two"]
    with pytest.raises(UserError, match="no column 'c'"):
        list(iter_texts(path, fields=["c"]))


# --------------------------------------------------------------------------- errors


def error_of(source: DataSource) -> str:
    with pytest.raises(UserError) as info:
        load_source(source)
    return info.value.message


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"document": "a", "summary": "b"}\n\n{"document": "c",\n', "utf-8")

    message = error_of(DataSource(path=str(path), task="summarize"))

    assert message.startswith(f"{path}:3: invalid JSON")


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "a"}\n[1, 2]\n', "utf-8")

    assert error_of(DataSource(path=str(path))) == (
        f"{path}:2: expected one JSON object per line, got list"
    )


def test_missing_field_names_field_and_row_in_its_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", ROWS)
    write_jsonl(tmp_path / "b.jsonl", [ROWS[0], {"document": "no summary here"}])

    message = error_of(DataSource(path=str(tmp_path), task="summarize"))

    assert message == f"{tmp_path / 'b.jsonl'} row 2: field 'summary' is missing or empty"


@pytest.mark.parametrize(("cell", "what"), [("", "missing or empty"), ("  ", "empty")])
def test_empty_field_names_field_and_row(tmp_path: Path, cell: str, what: str) -> None:
    path = write_delimited(tmp_path / "d.tsv", [ROWS[0], {"document": cell, "summary": "x"}], "\t")

    message = error_of(DataSource(path=str(path), task="summarize"))

    assert message == f"{path} row 2: field 'document' is {what}"


def test_blank_string_field_is_empty(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], {"document": " \n", "summary": "x"}])

    assert error_of(DataSource(path=str(path), task="summarize")) == (
        f"{path} row 2: field 'document' is empty"
    )


def test_absent_column_suggests_a_mapping(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"body": "x", "summary": "y"}])

    with pytest.raises(UserError) as info:
        load_source(DataSource(path=str(path), task="summarize"))

    assert "needs the field 'document'; columns: body, summary" in info.value.message
    assert "--column document=COLUMN" in str(info.value)


def test_mapping_to_a_missing_column_and_unknown_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)

    assert "column 'tldr' (mapped to field 'summary') not found" in error_of(
        DataSource(path=str(path), task="summarize", columns={"summary": "tldr"})
    )
    assert "columns: sumary is not a field of task summarize" in error_of(
        DataSource(path=str(path), task="summarize", columns={"sumary": "tldr"})
    )


@pytest.mark.parametrize("content", ["", "\n\n", "document,summary\n"])
def test_empty_dataset(tmp_path: Path, content: str) -> None:
    path = tmp_path / ("d.csv" if content.startswith("document") else "d.jsonl")
    path.write_text(content, "utf-8")

    assert "the dataset is empty" in error_of(DataSource(path=str(path), task="summarize"))


def test_non_utf8_file_reports_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"ok line\ncaf" + "é\n".encode("latin-1"))

    message = error_of(DataSource(path=str(path)))

    assert message.startswith(f"{path}: not UTF-8 text (byte 0xe9 at byte offset 11, line 2)")


def test_missing_path_and_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("x", "utf-8")

    assert error_of(DataSource(path=str(tmp_path / "nope.jsonl"))) == (
        f"{tmp_path / 'nope.jsonl'} does not exist"
    )
    assert "no files match" in error_of(DataSource(path=str(tmp_path / "*.jsonl")))
    assert "cannot tell the format from the extension '.md'" in error_of(
        DataSource(path=str(tmp_path / "notes.md"))
    )


def test_unreadable_file_or_directory_without_data(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root reads through chmod 000; test a directory with no data instead
        (tmp_path / "README.md").write_text("x", "utf-8")
        assert error_of(DataSource(path=str(tmp_path))) == (
            f"{tmp_path}: no data files (.jsonl, .json, .csv, .tsv, .parquet, .txt, .text, .arrow) found"
        )
        return
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    path.chmod(0)
    try:
        assert error_of(DataSource(path=str(path), task="summarize")).startswith(
            f"cannot read {path}: Permission denied"
        )
    finally:
        path.chmod(0o644)


def test_directory_with_mixed_formats(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", ROWS)
    (tmp_path / "b.csv").write_text("document,summary\nx,y\n", "utf-8")

    assert "holds files of several formats (csv, jsonl)" in error_of(
        DataSource(path=str(tmp_path), task="summarize")
    )


def test_malformed_csv_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("document,summary\na,b\nc,d,e\n", "utf-8")

    assert error_of(DataSource(path=str(path), task="summarize")).startswith(
        f"{path}: cannot read as csv: Error tokenizing data"
    )


def test_streaming_checks_rows_as_they_are_read(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], {"document": "x", "summary": ""}])

    rows = load_source(DataSource(path=str(path), task="summarize"), streaming=True)

    with pytest.raises(UserError, match=r"row 2: field 'summary' is empty"):
        list(rows)
