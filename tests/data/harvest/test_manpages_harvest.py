"""Harvesting NAME summaries and DESCRIPTION text from man pages written in tmp_path."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmforge.data.harvest.manpages import default_man_dirs, harvest_manpages, roff_sections
from lmforge.errors import UserError

TOOL = r""".\" A man(7) page with the usual preamble noise.
.TH TOOL 1 "2024" "tool 1.0" "User Commands"
.de XX
junk text that must not appear
..
.ie \n(.g .ds Aq \(aq
.el       .ds Aq '
.SH NAME
tool \- do \fBthings\fR quickly
.SH SYNOPSIS
.B tool
[\fIOPTION\fR]...
.SH DESCRIPTION
.B tool
reads \fIfiles\fP and writes
\*(lqresults\*(rq \(em fast.
.PP
Options:
.TP
.BR \-v ", " \-\-verbose
say more
.IP \(bu 2
a bullet point
.nf
line one
  line two
.fi
.if t \{\
typeset only text
.\}
.SH "SEE ALSO"
.BR other (8)
"""
TOOL_DESCRIPTION = (
    "tool reads files and writes \u201cresults\u201d \u2014 fast.\n\n"
    "Options:\n\n"
    "-v, --verbose\nsay more\n\n"
    "\u2022 a bullet point\nline one\n  line two"
)
OTHER = r""".Dd January 1, 2024
.Dt OTHER 8
.Os
.Sh NAME
.Nm other
.Nd manage the other thing
.Sh DESCRIPTION
The
.Nm
utility runs
.Xr tool 1
with
.Fl v
and
.Op Fl n Ar count .
.Pp
Second paragraph.
.Sh FILES
"""


def _man_tree(root: Path) -> Path:
    man = root / "man"
    (man / "man1").mkdir(parents=True)
    (man / "man8").mkdir()
    (man / "man1" / "tool.1").write_text(TOOL)
    (man / "man1" / "tool2.1").write_text(TOOL)  # same text: a duplicate
    (man / "man1" / "link.1").write_text(".so man1/tool.1\n")
    (man / "man1" / "nodesc.1").write_text(".SH NAME\nnodesc \\- has no description\n")
    (man / "man1" / "latin.1").write_bytes(".SH NAME\nlatin \\- caf\xe9\n".encode("latin-1"))
    (man / "man1" / "README").write_text("not a man page")
    (man / "man8" / "other.8.gz").write_bytes(gzip.compress(OTHER.encode()))
    (man / "zh_CN" / "man1").mkdir(parents=True)  # translations: not read from the root
    (man / "zh_CN" / "man1" / "tool.1").write_text(TOOL.replace("do", "\u505a"))
    return man


def test_rows_are_exact(tmp_path: Path) -> None:
    man = _man_tree(tmp_path)
    rows, stats = harvest_manpages([man])
    assert list(rows) == [
        {
            "name": "tool",
            "summary": "do things quickly",
            "description": TOOL_DESCRIPTION,
            "section": "1",
            "provenance": f"man:{man / 'man1' / 'tool.1'}",
        },
        {
            "name": "other",
            "summary": "manage the other thing",
            "description": "The other utility runs tool(1) with -v and [-n count].\n\n"
            "Second paragraph.",
            "section": "8",
            "provenance": f"man:{man / 'man8' / 'other.8.gz'}",
        },
    ]
    assert stats.files_scanned == 4  # nodesc, tool, tool2, other
    assert stats.files_skipped == {"not UTF-8": 1, "link to another page (.so)": 1}
    assert stats.items_skipped == {"no DESCRIPTION": 1}
    assert stats.duplicates == 1


def test_named_files_and_plain_folders(tmp_path: Path) -> None:
    man = _man_tree(tmp_path)
    rows, _ = harvest_manpages([man / "zh_CN"])  # a man root of its own
    assert [r["summary"] for r in rows] == ["\u505a things quickly"]
    rows, _ = harvest_manpages([man / "man8" / "other.8.gz"])
    assert [r["name"] for r in rows] == ["other"]
    rows, stats = harvest_manpages([man], limit_files=1)
    assert list(rows) == [] and stats.files_skipped == {"not UTF-8": 1}  # latin.1 sorts first
    with pytest.raises(UserError, match="nope does not exist"):
        harvest_manpages([tmp_path / "nope"])


def test_roff_details() -> None:
    page = r""".SH
NAME
x \- y
.SH DESCRIPTION
caf\[u00E9] \(co 2024 \e \&.dot and a \" comment
.UR https://example.org
the site
.UE .
.ie n .IP "\(bu" 4
.el .IP "*" 4
item
.ds Nx the name
Uses \*(Nx here, continued \
on the next line.
"""
    sections = roff_sections(page, {"NAME", "DESCRIPTION"})
    assert sections["NAME"] == "x - y"
    assert sections["DESCRIPTION"] == (
        "caf\u00e9 \u00a9 2024 \\ .dot and a the site.\n\n"
        "\u2022 item Uses the name here, continued on the next line."
    )


def test_default_dirs_follow_manpath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANPATH", f"{tmp_path}:{tmp_path / 'missing'}")
    assert default_man_dirs() == [tmp_path]
    monkeypatch.setenv("MANPATH", f"{tmp_path}:")  # an empty entry adds the system folders
    assert default_man_dirs()[0] == tmp_path


def test_cli(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    man = _man_tree(tmp_path)
    out = tmp_path / "man.jsonl"
    result = cli("data", "harvest", "manpages", man, "--out", out)
    assert result.code == 0, result.err
    assert [json.loads(line)["name"] for line in out.read_text().splitlines()] == ["tool", "other"]
    assert f"wrote 2 summary/description pairs to {out}" in result.out
    assert "removed 1 exact duplicates" in result.out

    result = cli("data", "harvest", "manpages", man, "--out", out)
    assert result.code == 2 and "already exists; pass --overwrite" in result.err
    assert cli("data", "harvest", "manpages", man, "--out", out, "--overwrite").code == 0

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("MANPATH", str(empty))  # a machine without man pages
    fresh = tmp_path / "none.jsonl"
    result = cli("data", "harvest", "manpages", "--out", fresh)
    assert result.code == 0
    assert result.out.startswith(
        f"nothing found: no summary/description pairs in man pages under {empty}"
    )
    assert not fresh.exists()
