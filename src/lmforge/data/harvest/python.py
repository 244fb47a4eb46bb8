"""Functions with docstrings from Python source: (docstring, code) pairs for code tasks.

Source is parsed with :mod:`ast` and never imported or run. Each function or method whose
docstring is not empty becomes one row:

``name``       qualified as Python does (``Class.method``, ``outer.<locals>.inner``)
``signature``  the ``def`` line(s) as written, up to the colon
``code``       decorators + def + body, without the docstring, dedented
``body``       the statements after the docstring, dedented
``docstring``  cleaned by :func:`inspect.cleandoc`; ``summary`` is its first paragraph
``path``, ``lineno``, ``provenance`` (``python:<path>:<lineno>``)

Rows come in sorted file order, then source order; exact repeats (same code and docstring)
keep only their first occurrence. Large trees are parsed by a process pool whose results are
merged in file order, so the output does not depend on the number of workers. The pool
starts its processes with ``spawn`` (safe in a process that holds threads), so a script that
calls :func:`harvest_python` on a large tree needs the usual ``if __name__ == "__main__":``
guard, or ``workers=1``.
"""

from __future__ import annotations

import ast
import gc
import io
import multiprocessing
import os
import re
import sys
import sysconfig
import tokenize
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from lmforge.data.harvest import (
    Deduplicator,
    HarvestStats,
    Row,
    existing_paths,
    timed,
)

# Folder names never descended into (the folder a user names is always read): tests, GUI
# demos, bytecode caches, vendored copies of other packages, and installed packages nested
# inside the standard library (site-packages is its own default root).
SKIP_DIRS = frozenset(
    {
        "__pycache__",
        "test",
        "tests",
        "idlelib",
        "turtledemo",
        "_vendor",
        "_vendored",
        "vendored",
        "site-packages",
        "dist-packages",
    }
)
# A docstring on its own line follows a line ending in ":" (maybe with a comment), indented.
# Files without one cannot give a row, and skipping their parse saves ~10% of the time on a
# full site-packages (large generated tables, re-export modules).
_MAY_HAVE_DOCSTRING = re.compile(
    rb":[ \t]*(?:#[^\r\n]*)?(?:\r\n|\r|\n)"  # the colon ending a def line
    rb"(?:[ \t\f]*(?:#[^\r\n]*)?(?:\r\n|\r|\n))*"  # blank or comment lines
    rb"[ \t\f]+[rRuU]?['\"]"  # an indented string literal
)
# Below this many files the pool's start-up costs more than it saves.
_POOL_MIN_FILES = 64
_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
# Compound statements whose blocks may define functions, and the fields holding those blocks
# (``try`` handlers and ``match`` cases are walked separately).
_COMPOUND: dict[type, tuple[str, ...]] = {
    ast.If: ("body", "orelse"),
    ast.For: ("body", "orelse"),
    ast.AsyncFor: ("body", "orelse"),
    ast.While: ("body", "orelse"),
    ast.With: ("body",),
    ast.AsyncWith: ("body",),
    ast.Try: ("body", "orelse", "finalbody"),
    ast.Match: (),
}
if sys.version_info >= (3, 11):
    _COMPOUND[ast.TryStar] = ("body", "orelse", "finalbody")


def default_python_paths() -> list[Path]:
    """The running interpreter's standard library and site-packages, those that exist."""
    paths = sysconfig.get_paths()
    roots: list[Path] = []
    for key in ("stdlib", "purelib", "platlib"):
        root = Path(paths[key])
        if root.is_dir() and root not in roots:
            roots.append(root)
    return roots


def python_files(roots: Sequence[Path]) -> list[str]:
    """Every ``.py`` file under ``roots`` (skipping :data:`SKIP_DIRS` and hidden folders), sorted.

    Paths are strings: building 30,000 ``Path`` objects costs more than the walk itself.
    """
    # Keyed by real path so overlapping roots count a file once. os.walk does not follow
    # folder links, so below a resolved root the path needs no resolving (resolving 30,000
    # files one by one took seconds).
    found: dict[str, str] = {}
    for root in roots:
        real_root = os.path.realpath(root)
        if root.is_file():
            found.setdefault(real_root, str(root))
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
            real = os.path.normpath(os.path.join(real_root, os.path.relpath(dirpath, root)))
            for name in filenames:
                if name.endswith(".py"):
                    found.setdefault(os.path.join(real, name), os.path.join(dirpath, name))
    return sorted(found.values())


def harvest_python(
    paths: Sequence[str | Path] | None = None,
    *,
    max_lines: int = 200,
    limit_files: int | None = None,
    workers: int | None = None,
) -> tuple[Iterator[Row], HarvestStats]:
    """Harvest documented functions from ``paths`` (default: stdlib and site-packages).

    Missing paths raise a UserError now; the files are read lazily as rows are pulled.
    ``workers`` defaults to the number of CPUs; ``limit_files`` keeps the first N files.
    """
    roots = existing_paths(paths, "Python source") if paths else default_python_paths()
    stats = HarvestStats(sources=[str(r) for r in roots])

    def rows() -> Iterator[Row]:
        files = python_files(roots)
        if limit_files is not None:
            files = files[:limit_files]
        dedup = Deduplicator(stats)
        for outcome, file_rows, skipped in _harvest_files(files, max_lines, workers):
            if outcome == "ok":
                stats.files_scanned += 1
            else:
                stats.files_skipped[outcome] += 1
            stats.items_skipped.update(skipped)
            for row in file_rows:
                if dedup.is_new(row["code"], row["docstring"]):
                    yield row

    return timed(rows(), stats), stats


FileResult = tuple[str, list[Row], Counter[str]]


def _harvest_files(files: list[str], max_lines: int, workers: int | None) -> Iterator[FileResult]:
    """Per-file results in the order of ``files``, from a process pool when it pays."""
    workers = workers or os.cpu_count() or 1
    jobs = [(path, max_lines) for path in files]
    if workers == 1 or len(files) < _POOL_MIN_FILES:
        yield from (_harvest_file(*job) for job in jobs)
        return
    # spawn, not fork: the parent may hold threads (torch, tokenizers) that fork would copy.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        # imap keeps input order, so the merged output is the same for any worker count.
        yield from pool.imap(_harvest_job, jobs, chunksize=16)


def _harvest_job(job: tuple[str, int]) -> FileResult:
    return _harvest_file(*job)


def _harvest_file(path: str, max_lines: int) -> FileResult:
    """Harvest one file with the cyclic garbage collector paused.

    An AST holds no reference cycles, so the collector only slows parsing (by ~25%) by
    walking the growing tree again and again; reference counting frees it all the same.
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_file(path, max_lines)
    finally:
        if gc_was_enabled:
            gc.enable()


def _parse_file(path: str, max_lines: int) -> FileResult:
    """("ok", rows, skipped-item reasons), or (why the file was skipped, [], ...)."""
    skipped: Counter[str] = Counter()
    try:
        source = Path(path).read_bytes()
    except OSError:
        return "unreadable", [], skipped
    source = source.removeprefix(b"\xef\xbb\xbf")
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8", [], skipped
    if not _MAY_HAVE_DOCSTRING.search(source):
        return "ok", [], skipped
    try:
        tree = ast.parse(text, filename=path)
    except (SyntaxError, ValueError):  # ValueError: NUL bytes in the source
        return "syntax error", [], skipped
    # Byte lines: ast columns are UTF-8 byte offsets, and bytes split only on \r, \n, \r\n
    # as Python's tokenizer does (str.splitlines would also split on form feeds).
    lines = source.splitlines(keepends=True)
    rows = []
    for qualname, node in _functions(tree.body, ""):
        row = _function_row(node, qualname, lines, path, max_lines, skipped)
        if row is not None:
            rows.append(row)
    return "ok", rows, skipped


def _functions(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, _FunctionNode]]:
    """Every function under ``body`` with its qualified name, in source order.

    Walks statement lists only (not expressions), which is far cheaper than ``ast.walk``.
    """
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + node.name, node
            yield from _functions(node.body, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node.body, f"{prefix}{node.name}.")
        elif type(node) in _COMPOUND:  # if/for/while/with/try/match: same prefix inside
            for field in _COMPOUND[type(node)]:
                yield from _functions(getattr(node, field), prefix)
            for clause in getattr(node, "handlers", None) or getattr(node, "cases", None) or ():
                yield from _functions(clause.body, prefix)


def _function_row(
    node: _FunctionNode,
    qualname: str,
    lines: list[bytes],
    path: str,
    max_lines: int,
    skipped: Counter[str],
) -> Row | None:
    docstring = ast.get_docstring(node, clean=True)
    if not docstring or not docstring.strip():
        skipped["no docstring"] += 1
        return None
    doc, rest = node.body[0], node.body[1:]
    if not rest or all(_is_placeholder(stmt) for stmt in rest):
        skipped["docstring only"] += 1
        return None
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    end = node.end_lineno or node.lineno
    if end - start + 1 > max_lines:
        skipped[f"over {max_lines} lines"] += 1
        return None
    before_doc = lines[doc.lineno - 1][: doc.col_offset]
    after_doc = lines[(doc.end_lineno or doc.lineno) - 1][doc.end_col_offset :].strip()
    if before_doc.strip() or (after_doc and not after_doc.startswith(b"#")):
        skipped["docstring shares a line with code"] += 1
        return None

    indent = _indent(lines[start - 1])
    body_start = doc.end_lineno or doc.lineno  # 0-based index of the line after the docstring
    while body_start < end and not lines[body_start].strip():
        body_start += 1  # the blank lines that set the docstring apart go with it
    header = lines[start - 1 : doc.lineno - 1]
    body = lines[body_start:end]
    signature = _signature(lines[node.lineno - 1 : doc.lineno - 1], _indent(lines[node.lineno - 1]))
    return {
        "name": qualname,
        "signature": signature,
        "code": _dedent(header + body, indent),
        "body": _dedent(body, _indent(lines[rest[0].lineno - 1])),
        "docstring": docstring,
        "summary": " ".join(re.split(r"\n\s*\n", docstring, maxsplit=1)[0].split()),
        "path": path,
        "lineno": node.lineno,
        "provenance": f"python:{path}:{node.lineno}",
    }


def _is_placeholder(stmt: ast.stmt) -> bool:
    """``pass`` or a bare ``...``: a body that says nothing."""
    if isinstance(stmt, ast.Pass):
        return True
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and stmt.value.value is Ellipsis
    )


def _indent(line: bytes) -> bytes:
    return line[: len(line) - len(line.lstrip(b" \t"))]


def _dedent(lines: list[bytes], indent: bytes) -> str:
    """Remove exactly ``indent`` from each line that has it (so multi-line strings that sit
    further left than the code stay intact, unlike :func:`textwrap.dedent`)."""
    out = []
    for line in lines:
        line = line.rstrip(b"\r\n")
        out.append(line[len(indent) :] if line.startswith(indent) else line)
    return b"\n".join(out).decode("utf-8").rstrip()


def _signature(header: list[bytes], indent: bytes) -> str:
    """The def line(s) up to and including the colon that ends them."""
    text = _dedent(header, indent)
    if "#" not in text:  # nothing but the header and whitespace: it ends with its colon
        return text
    # A comment follows (or sits inside) the header: find the colon with the tokenizer.
    depth = 0
    lines = text.split("\n")
    try:
        for token in tokenize.generate_tokens(io.StringIO(text + "\n").readline):
            if token.type != tokenize.OP:
                continue
            if token.string in "([{":
                depth += 1
            elif token.string in ")]}":
                depth -= 1
            elif token.string == ":" and depth == 0:
                row, col = token.end
                return "\n".join([*lines[: row - 1], lines[row - 1][:col]])
    except (tokenize.TokenError, SyntaxError):
        pass
    return text
