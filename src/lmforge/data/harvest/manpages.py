"""One-line summaries paired with DESCRIPTION text, from the man pages on this machine.

Each page's NAME line (``grep \\- print lines that match patterns``) gives ``summary``; its
DESCRIPTION section, as plain text, gives ``description``: a (summary <-> description)
corpus for summarization and writing. Rows: ``name`` (the page, from its file name),
``summary``, ``description``, ``section`` (``1``, ``3ssl``...), ``provenance``
(``man:<path>``). Pages may be plain or compressed (``.gz``, ``.bz2``, ``.xz``).

Roff is turned into text by the small stripper below, written by hand because no maintained
pure-Python roff parser exists (doclifter converts whole documents to DocBook and groff is a
separate program, one process per page). It knows the man(7) macros, the common mdoc(7)
ones, font/size/glyph escapes and defined strings, and reads only NAME and DESCRIPTION.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from lmforge.data.harvest import Deduplicator, HarvestStats, Row, existing_paths, timed

_PAGE_NAME = re.compile(r"^(?P<name>.+)\.(?P<section>[1-9n][a-z0-9_]*)(?:\.(?:gz|bz2|xz|lzma))?$")
_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.decompress,
    ".bz2": bz2.decompress,
    ".xz": lzma.decompress,
    ".lzma": lzma.decompress,
}


def default_man_dirs() -> list[Path]:
    """``$MANPATH`` (an empty entry stands for the defaults), else the usual man folders."""
    defaults = [
        Path("/usr/local/share/man"),
        Path("/usr/share/man"),
        Path("/usr/local/man"),
        Path(sys.base_prefix, "share", "man"),
    ]
    manpath = os.environ.get("MANPATH")
    candidates: list[Path] = []
    for entry in manpath.split(":") if manpath else [""]:
        candidates.extend(defaults if entry == "" else [Path(entry)])
    dirs: list[Path] = []
    for path in candidates:
        if path.is_dir() and path not in dirs:
            dirs.append(path)
    return dirs


def man_pages(roots: Sequence[Path]) -> list[Path]:
    """Man page files under ``roots``, sorted; each file counted once.

    A folder with ``man<section>`` subfolders is a man root: only those are read (so
    translations in ``zh_CN/man1`` are left out unless that folder is named); any other
    folder is searched through for files named like ``ls.1`` or ``ls.1.gz``.
    """
    found: dict[Path, Path] = {}
    for root in roots:
        if root.is_file():
            found.setdefault(root.resolve(), root)
            continue
        sections = sorted(p for p in root.glob("man*") if p.is_dir())
        files = [f for s in sections for f in s.iterdir()] if sections else list(root.rglob("*"))
        for path in files:
            if _PAGE_NAME.match(path.name) and path.is_file():
                found.setdefault(path.resolve(), path)
    return sorted(found.values(), key=str)


def harvest_manpages(
    paths: Sequence[str | Path] | None = None, *, limit_files: int | None = None
) -> tuple[Iterator[Row], HarvestStats]:
    """Harvest (summary, description) rows from man pages under ``paths`` (default: MANPATH)."""
    roots = existing_paths(paths, "man pages") if paths else default_man_dirs()
    stats = HarvestStats(sources=[str(r) for r in roots])

    def rows() -> Iterator[Row]:
        pages = man_pages(roots)
        if limit_files is not None:
            pages = pages[:limit_files]
        dedup = Deduplicator(stats)
        for path in pages:
            row = _page_row(path, stats)
            if row is not None and dedup.is_new(row["summary"], row["description"]):
                yield row

    return timed(rows(), stats), stats


def _page_row(path: Path, stats: HarvestStats) -> Row | None:
    try:
        data = path.read_bytes()
        decompress = _DECOMPRESS.get(path.suffix)
        if decompress is not None:
            data = decompress(data)
    except (OSError, EOFError, lzma.LZMAError):
        stats.files_skipped["unreadable"] += 1
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        stats.files_skipped["not UTF-8"] += 1
        return None
    if text.lstrip().startswith(".so "):
        stats.files_skipped["link to another page (.so)"] += 1
        return None
    stats.files_scanned += 1
    sections = roff_sections(text, {"NAME", "DESCRIPTION"})
    name_line = " ".join(sections.get("NAME", "").split())
    summary = re.split(r"\s+(?:\\?-|\u2013|\u2014)+\s+", name_line, maxsplit=1)
    description = sections.get("DESCRIPTION", "").strip()
    if len(summary) < 2 or not summary[1].strip():
        stats.items_skipped["no NAME summary"] += 1
        return None
    if not description:
        stats.items_skipped["no DESCRIPTION"] += 1
        return None
    match = _PAGE_NAME.match(path.name)
    assert match is not None  # man_pages only lists matching names
    return {
        "name": match["name"],
        "summary": summary[1].strip(),
        "description": description,
        "section": match["section"],
        "provenance": f"man:{path}",
    }


# ----------------------------------------------------------------------------- roff to text

# Named glyphs (\(xx, \[xx]) that carry meaning in prose; unknown ones are dropped.
_GLYPHS = {
    "em": "\u2014", "en": "\u2013", "hy": "-", "mi": "-", "bu": "\u2022", "aq": "'",
    "dq": '"', "lq": "\u201c", "rq": "\u201d", "oq": "\u2018", "cq": "\u2019", "co": "\u00a9",
    "rg": "\u00ae", "tm": "\u2122", "mu": "\u00d7", "de": "\u00b0", "+-": "\u00b1",
    "<=": "\u2264", ">=": "\u2265", "!=": "\u2260", "->": "\u2192", "<-": "\u2190",
    "ti": "~", "ha": "^", "ga": "`", "rs": "\\", "sl": "/", "ba": "|", "br": "|", "ul": "_",
    "ss": "\u00df", "la": "\u27e8", "ra": "\u27e9", "Fo": "\u00ab", "Fc": "\u00bb",
}  # fmt: skip
# Strings pages commonly define (pod2man, GNU pages); a page's own .ds lines override them.
_STRINGS = {"lq": "\u201c", "rq": "\u201d", "Aq": "'", "R": "\u00ae", "Tm": "\u2122",
            "C`": '"', "C'": '"', "L\"": "\u201c", "R\"": "\u201d"}  # fmt: skip
_SIMPLE_ESCAPES = {"-": "-", "e": "\\", "\\": "\\", "&": "", "|": "", "^": "", "~": " ",
                   " ": " ", "0": " ", "c": "", "%": "", ":": "", "{": "", "}": "",
                   "'": "\u00b4", "`": "`", ".": ".", "t": "\t", "a": "", "d": "", "u": "",
                   "r": "", "p": "", "z": "", "/": "", ",": "", "E": ""}  # fmt: skip
_ESCAPE = re.compile(
    r"""\\(?:
      (?P<comment>["\#].*)                                   # \" comment to end of line
    | [fFsnmgkMY](?:\[[^\]]*\]|\([^\n]{2}|[+-]?\d+|[^\n])    # font, size, register: drop
    | [hvwxlLobDNXZRSCA]'[^']*'                             # escapes with quoted args: drop
    | \((?P<glyph2>[^\n]{2})                                 # \(em
    | \[(?P<glyph>[^\]]*)\]                                  # \[em], \[u00E9]
    | \*(?:\[(?P<string>[^\]]*)\]|\((?P<string2>[^\n]{2})|(?P<string1>[^\n]))  # \*(lq
    | (?P<char>[^\n])                                        # \- \e \& ...
    )""",
    re.VERBOSE,
)
_MAN_FONTS = {"B", "I", "SM", "SB"}
_MAN_ALTERNATING = {"BR", "RB", "BI", "IB", "IR", "RI"}
_BREAKS = {"PP", "P", "LP", "HP", "Pp", "sp", "br", "Bl", "El", "Bd", "Ed", "RS", "RE"}
# mdoc macros that may appear as words inside other macro lines (``.Op Fl v Ar file``).
_MDOC_CALLABLE = {
    "Ad", "An", "Ar", "Cd", "Cm", "Dv", "Er", "Ev", "Fa", "Fl", "Fn", "Ft", "Ic", "Li", "Nm",
    "Pa", "Va", "Vt", "Em", "Sy", "No", "Ns", "Op", "Oo", "Oc", "Dq", "Do", "Dc", "Sq", "So",
    "Sc", "Pq", "Po", "Pc", "Qq", "Qo", "Qc", "Ql", "Xr", "Ux", "Bx", "Ox", "Nx", "Fx", "At",
    "Tn", "Ms", "Xo", "Xc", "Aq", "Ao", "Ac", "Bq", "Bo", "Bc", "Eo", "Ec", "Lk", "Mt",
}  # fmt: skip
_PUNCTUATION = {".", ",", ";", ":", "?", "!", ")", "]"}
_MDOC_ENCLOSE = {"Op": "[]", "Dq": "\u201c\u201d", "Sq": "\u2018\u2019", "Pq": "()",
                 "Qq": '""', "Aq": "\u27e8\u27e9", "Bq": "[]", "Ql": "''"}  # fmt: skip
_MDOC_TEXT = {"Ux": "UNIX", "Bx": "BSD", "Ox": "OpenBSD", "Nx": "NetBSD", "Fx": "FreeBSD",
              "At": "AT&T UNIX", "Oo": "[", "Oc": "]", "Do": "\u201c", "Dc": "\u201d",
              "So": "\u2018", "Sc": "\u2019", "Po": "(", "Pc": ")", "Ao": "\u27e8",
              "Ac": "\u27e9", "Bo": "[", "Bc": "]"}  # fmt: skip


def unescape(text: str, strings: dict[str, str]) -> str:
    """Plain text for one roff line: escapes resolved, comments and font changes dropped."""

    def replace(match: re.Match[str]) -> str:
        if match["comment"] is not None:
            return ""
        glyph = match["glyph2"] or match["glyph"]
        if glyph is not None:
            if re.fullmatch(r"u[0-9A-Fa-f]{4,6}", glyph):
                return chr(int(glyph[1:], 16))
            return _GLYPHS.get(glyph, "")
        name = match["string"] or match["string2"] or match["string1"]
        if name is not None:
            return strings.get(name, _STRINGS.get(name, ""))
        char = match["char"]
        if char is not None:
            return _SIMPLE_ESCAPES.get(char, char)
        return ""

    return _ESCAPE.sub(replace, text)


def _request_args(rest: str) -> list[str]:
    """Split a request's arguments the roff way: spaces separate, "double quotes" group."""
    return [a[1:-1].replace('""', '"') if a.startswith('"') else a for a in _ARG.findall(rest)]


_END_OF_DEFINITION = re.compile(r"[.']\s*\.(?:\s|$)")  # "..", also written ".  ."
_ARG = re.compile(r'"(?:[^"]|"")*"?|\S+')


def _condition(cond: str) -> bool:
    """Evaluate a roff condition as ``nroff`` from groff would (terminal output)."""
    negate = cond.startswith("!")
    cond = cond.lstrip("!")
    value = cond == "n" or cond.startswith(r"\n(.g") or cond.startswith(r"\n[.g]")
    return value != negate


class _TextBuilder:
    """Collects paragraphs of one section: filled words, forced line breaks, no-fill lines."""

    def __init__(self) -> None:
        self.paragraphs: list[list[str]] = []
        self.lines: list[str] = []
        self.words: list[str] = []
        self.fill = True

    def text(self, text: str) -> None:
        if self.fill:
            self.words.extend(text.split())
        else:
            self.break_line()
            self.lines.append(text.rstrip())

    def attach(self, text: str) -> None:
        """Append without a space before (mdoc ``Ns``, URL punctuation)."""
        if self.words and text:
            self.words[-1] += text
        else:
            self.text(text)

    def break_line(self) -> None:
        if self.words:
            self.lines.append(" ".join(self.words))
            self.words = []

    def break_paragraph(self) -> None:
        self.break_line()
        while self.lines and not self.lines[-1].strip():
            self.lines.pop()
        if self.lines:
            self.paragraphs.append(self.lines)
        self.lines = []

    def result(self) -> str:
        self.break_paragraph()
        return "\n\n".join("\n".join(lines) for lines in self.paragraphs)


def roff_sections(source: str, wanted: set[str]) -> dict[str, str]:
    """Plain text of the ``wanted`` sections (upper-case names) of a man(7)/mdoc(7) page."""
    strings: dict[str, str] = {}
    found: dict[str, str] = {}
    section: str | None = None
    builder = _TextBuilder()
    ignore_until_dots = False  # inside .de/.ig/.am: macro definitions, not text
    skip_depth = 0  # inside a false conditional block \{ ... \}
    heading_next = False
    tag_next = False
    last_condition = True
    pending = list(_logical_lines(source))
    pending.reverse()
    while pending:
        line = pending.pop()
        if ignore_until_dots:
            ignore_until_dots = not _END_OF_DEFINITION.match(line)
            continue
        if skip_depth:
            skip_depth += line.count("\\{") - line.count("\\}")
            continue
        if line.startswith((".", "'")):
            request, _, rest = line[1:].lstrip(" \t").partition(" ")
            request, rest = request.strip(), rest.strip()
            if request in ("if", "ie", "el"):
                # .if COND BODY / .ie COND BODY / .el BODY; a BODY of "\{" opens a block.
                if request == "el":
                    truth, body = not last_condition, rest
                else:
                    cond, _, body = rest.partition(" ")
                    truth = _condition(cond)
                    if request == "ie":
                        last_condition = truth
                body = body.strip()
                opens = body.startswith("\\{")
                if opens:
                    body = body[2:].strip()
                if truth:
                    if body and not body.startswith("\\}"):
                        pending.append(body)
                elif opens:
                    skip_depth = 1 + body.count("\\{") - body.count("\\}")
                continue
            if request.startswith(("\\}", '\\"')) or not request:
                continue
            if request in ("de", "de1", "ig", "am"):
                ignore_until_dots = True
                continue
            if request == "ds":
                name, _, value = rest.partition(" ")
                strings[name] = unescape(value.lstrip('"'), strings)
                continue
            if request in ("SH", "Sh"):
                if section in wanted:
                    found[section] = builder.result()
                    if wanted <= found.keys():
                        break
                builder = _TextBuilder()
                section, heading_next = None, not rest
                if rest:
                    section = " ".join(_request_args(unescape(rest, strings))).upper()
                continue
            if section not in wanted:
                continue
            _macro(request, rest, builder, strings, section)
            if request == "TP":
                tag_next = True
            elif tag_next and request in _MAN_FONTS | _MAN_ALTERNATING:
                builder.break_line()  # the macro line was the .TP tag
                tag_next = False
            continue
        if heading_next:
            section, heading_next = unescape(line, strings).strip().upper(), False
            continue
        if section not in wanted:
            continue
        if not line.strip():
            if builder.fill:
                builder.break_paragraph()
            else:
                builder.lines.append("")
            continue
        builder.text(unescape(line, strings))
        if tag_next:
            builder.break_line()
            tag_next = False
    if section in wanted and section not in found:
        found[section] = builder.result()
    return found


def _logical_lines(source: str) -> Iterator[str]:
    """Source lines with ``\\`` + newline continuations joined."""
    carry = ""
    for line in source.splitlines():
        line = carry + line
        stripped = line.rstrip("\\")
        if (len(line) - len(stripped)) % 2 == 1:  # an odd run of backslashes: continuation
            carry = line[:-1]
            continue
        carry = ""
        yield line
    if carry:
        yield carry


def _macro(
    request: str, rest: str, builder: _TextBuilder, strings: dict[str, str], section: str
) -> None:
    """Apply one man(7)/mdoc(7) macro inside a wanted section."""
    args = _request_args(rest)
    if request in _BREAKS or request == "TP":
        builder.break_paragraph()
    elif request in ("IP", "It"):
        builder.break_paragraph()
        tag = _mdoc_words(args) if request == "It" else args[0] if args else ""
        if tag.strip():
            builder.text(unescape(tag, strings))
    elif request in ("nf", "EX", "Dl", "D1"):
        builder.break_line()
        builder.fill = request in ("Dl", "D1")
        if args:
            builder.text(unescape(_mdoc_words(args), strings))
    elif request in ("fi", "EE"):
        builder.break_line()
        builder.fill = True
    elif request in ("SS", "Ss"):
        builder.break_paragraph()
        builder.text(unescape(" ".join(args), strings))
        builder.break_paragraph()
    elif request in _MAN_FONTS:
        builder.text(unescape(" ".join(args), strings))
    elif request in _MAN_ALTERNATING:
        builder.text(unescape("".join(args), strings))
    elif request in ("UE", "ME"):
        builder.attach(unescape("".join(args), strings))
    elif request == "Nm" and section == "NAME":
        builder.text(unescape(" ".join(args), strings))
    elif request == "Nm":
        builder.text(unescape(" ".join(args) or strings.get("_Nm", ""), strings))
    elif request == "Nd":
        builder.text("- " + unescape(" ".join(args), strings))
    elif request in _MDOC_CALLABLE:
        text = unescape(_mdoc_words([request, *args]), strings)
        if request == "Ns":
            builder.attach(text)
        else:
            builder.text(text)
    if request == "Nm" and args and "_Nm" not in strings:
        strings["_Nm"] = args[0]  # mdoc: a bare .Nm later repeats the first name


def _mdoc_words(args: list[str]) -> str:
    """Render an mdoc macro line's words: macro names dropped or turned into their text."""
    suffix = ""
    while args and args[-1] in _PUNCTUATION:  # ".Op Fl v ." -> "[-v]."
        suffix = args[-1] + suffix
        args = args[:-1]
    out: list[str] = []
    closers: list[str] = []
    flag = attach = False
    manual_ref = 0  # .Xr name section -> name(section)
    for word in args:
        if manual_ref == 1 and out:
            out[-1] += f"({word})"
            manual_ref = 0
        elif word == "Xr":
            manual_ref = 2
        elif word in _MDOC_ENCLOSE:
            opening, closing = _MDOC_ENCLOSE[word]
            out.append(opening)
            closers.append(closing)
            attach = True
        elif word in _MDOC_TEXT:
            out.append(_MDOC_TEXT[word])
        elif word == "Fl":
            flag = True
        elif word == "Ns":
            attach = True
        elif word in _MDOC_CALLABLE:
            continue
        else:
            if flag:
                word, flag = f"-{word}", False
            if (attach or word in _PUNCTUATION) and out:
                out[-1] += word
            else:
                out.append(word)
            attach = False
            manual_ref = max(manual_ref - 1, 0)
    if flag:
        out.append("-")
    return " ".join(out) + "".join(reversed(closers)) + suffix
