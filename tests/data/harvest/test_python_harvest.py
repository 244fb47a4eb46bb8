"""Harvesting documented functions from Python source trees built in tmp_path."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from lmforge.data.harvest import python as harvest_module
from lmforge.data.harvest import write_harvest
from lmforge.data.harvest.python import harvest_python, python_files
from lmforge.errors import UserError

MODULE = '''\
import functools


def plain(a, b=1) -> int:
    """Add two numbers.

    Returns the sum
    of a and b.
    """

    total = a + b
    return total


def no_doc(x):
    return x


def only_doc():
    """Nothing else here."""
    ...


class Greeter:
    """A class docstring is not a function's."""

    @functools.cache
    def greet(self, name: str,
              loud: bool = False,  # shout?
              ) -> str:  # trailing comment
        """Say hello."""
        text = f"""hello
{name}"""
        return text.upper() if loud else text

    if True:
        async def wait(self):
            """Wait a bit."""
            def inner():
                """Inner helper."""
                return 1
            return inner()
'''


def _line(source: str, text: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


def _harvest(*paths: Path, **kwargs) -> tuple[list[dict], object]:
    rows, stats = harvest_python(paths, **kwargs)
    return list(rows), stats


def test_rows_are_exact(tmp_path: Path) -> None:
    path = tmp_path / "mod.py"
    path.write_text(MODULE)
    rows, stats = _harvest(tmp_path)

    names = [r["name"] for r in rows]
    assert names == ["plain", "Greeter.greet", "Greeter.wait", "Greeter.wait.<locals>.inner"]
    assert rows[0] == {
        "name": "plain",
        "signature": "def plain(a, b=1) -> int:",
        "code": "def plain(a, b=1) -> int:\n    total = a + b\n    return total",
        "body": "total = a + b\nreturn total",
        "docstring": "Add two numbers.\n\nReturns the sum\nof a and b.",
        "summary": "Add two numbers.",
        "path": str(path),
        "lineno": 4,
        "provenance": f"python:{path}:4",
    }
    greet = rows[1]
    assert greet["signature"] == (
        "def greet(self, name: str,\n          loud: bool = False,  # shout?\n          ) -> str:"
    )
    # Decorators stay in the code; the string that sits at column 0 keeps its text.
    assert greet["code"] == (
        "@functools.cache\n"
        "def greet(self, name: str,\n"
        "          loud: bool = False,  # shout?\n"
        "          ) -> str:  # trailing comment\n"
        '    text = f"""hello\n'
        '{name}"""\n'
        "    return text.upper() if loud else text"
    )
    assert greet["body"] == 'text = f"""hello\n{name}"""\nreturn text.upper() if loud else text'
    assert greet["lineno"] == _line(MODULE, "def greet")
    assert rows[2]["signature"] == "async def wait(self):"
    # Only a function's own docstring is taken out; a nested function keeps its own.
    assert rows[2]["body"] == 'def inner():\n    """Inner helper."""\n    return 1\nreturn inner()'
    assert rows[3]["code"] == "def inner():\n    return 1"
    assert all(r["provenance"] == f"python:{path}:{r['lineno']}" for r in rows)
    assert stats.files_scanned == 1 and stats.rows == 4
    assert stats.items_skipped == {"no docstring": 1, "docstring only": 1}


def test_bad_files_are_skipped_and_counted(tmp_path: Path) -> None:
    doc_function = 'def f():\n    """Doc."""\n    return 1\n'
    (tmp_path / "good.py").write_text(doc_function)
    (tmp_path / "broken.py").write_text(doc_function + "def (:\n")
    (tmp_path / "latin1.py").write_bytes(doc_function.replace("Doc", "D\xf6c").encode("latin-1"))
    (tmp_path / "long.py").write_text('def g():\n    """Long."""\n' + "    x = 1\n" * 10)
    (tmp_path / "tests").mkdir()  # test folders are not read
    (tmp_path / "tests" / "test_x.py").write_text(doc_function.replace("f()", "t()"))

    rows, stats = _harvest(tmp_path, max_lines=5)
    assert [(r["name"], Path(r["path"]).name) for r in rows] == [("f", "good.py")]
    assert stats.files_scanned == 2  # good.py, long.py
    assert stats.files_skipped == {"syntax error": 1, "not UTF-8": 1}
    assert stats.items_skipped == {"over 5 lines": 1}


def test_duplicates_removed_and_order_is_sorted(tmp_path: Path) -> None:
    function = 'def f(x):\n    """Double x."""\n    return 2 * x\n'
    for name in ("b.py", "a.py", "c.py"):
        (tmp_path / name).write_text(function)
    (tmp_path / "c.py").write_text(function + '\n\ndef g():\n    """G."""\n    return 0\n')
    rows, stats = _harvest(tmp_path)
    assert [(Path(r["path"]).name, r["name"]) for r in rows] == [("a.py", "f"), ("c.py", "g")]
    assert stats.duplicates == 2


def test_pool_gives_the_same_rows_as_one_process(tmp_path: Path, monkeypatch) -> None:
    for i in range(12):
        body = f'def f{i}(x):\n    """Add {i}."""\n    return x + {i}\n'
        (tmp_path / f"m{i:02d}.py").write_text(body)
    one, _ = _harvest(tmp_path, workers=1)
    monkeypatch.setattr(harvest_module, "_POOL_MIN_FILES", 0)
    pooled, stats = _harvest(tmp_path, workers=2)
    assert pooled == one and len(one) == 12
    assert stats.files_scanned == 12


def test_limit_files_and_default_paths(tmp_path: Path) -> None:
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text('def f():\n    """F."""\n    return 1\n')
    assert len(python_files([tmp_path])) == 2
    rows, _ = _harvest(tmp_path, limit_files=1)
    assert len(rows) == 1

    rows, stats = harvest_python(limit_files=5)  # this interpreter's own library
    assert stats.sources[0] == sysconfig.get_paths()["stdlib"]
    for row in rows:
        assert row["path"].startswith(tuple(stats.sources))
    assert stats.files_scanned + sum(stats.files_skipped.values()) == 5


def test_missing_path_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does-not-exist does not exist"):
        harvest_python([tmp_path / "does-not-exist"])


def test_failed_harvest_leaves_no_output(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.py", "b.py"):
        (src / name).write_text('def f():\n    """F."""\n    return 1\n')
    calls = []

    def failing(path: str, max_lines: int):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return "ok", [{"code": path, "docstring": "d", "provenance": path}], {}

    monkeypatch.setattr(harvest_module, "_parse_file", failing)
    rows, _ = harvest_python([src], workers=1)
    out = tmp_path / "out" / "rows.jsonl"
    with pytest.raises(RuntimeError):
        write_harvest(rows, out)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary file left behind


def test_cli_writes_refuses_and_overwrites(tmp_path: Path, cli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "mod.py").write_text(MODULE)
    out = tmp_path / "py.jsonl"

    result = cli("data", "harvest", "python", src, "--out", out)
    assert result.code == 0, result.err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["name"] for r in rows][:2] == ["plain", "Greeter.greet"]
    assert f"wrote 4 functions to {out}" in result.out
    assert "scanned 1 Python files" in result.out
    assert "skipped: 1 no docstring, 1 docstring only" in result.out

    result = cli("data", "harvest", "python", src, "--out", out)
    assert result.code == 2
    assert (
        result.err.strip()
        == f"lmforge: error: {out} already exists; pass --overwrite to replace it"
    )

    (src / "mod.py").write_text('def f():\n    """F."""\n    return 1\n')
    result = cli("data", "harvest", "python", src, "--out", out, "--overwrite")
    assert result.code == 0
    assert len(out.read_text().splitlines()) == 1

    result = cli("data", "harvest", "python", tmp_path / "nope", "--out", tmp_path / "x.jsonl")
    assert result.code == 2
    assert "nope does not exist" in result.err
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_nothing_found_writes_nothing(tmp_path: Path, cli) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    out = tmp_path / "py.jsonl"
    result = cli("data", "harvest", "python", tmp_path / "empty.py", "--out", out)
    assert result.code == 0
    assert result.out.startswith("nothing found: no functions in Python files under ")
    assert not out.exists()


def test_cli_interrupt_leaves_no_output(tmp_path: Path, cli, monkeypatch) -> None:
    (tmp_path / "a.py").write_text('def f():\n    """F."""\n    return 1\n')
    (tmp_path / "b.py").write_text('def g():\n    """G."""\n    return 1\n')
    real = harvest_module._parse_file

    def interrupted(path: str, max_lines: int):
        if path.endswith("b.py"):
            raise KeyboardInterrupt
        return real(path, max_lines)

    monkeypatch.setattr(harvest_module, "_parse_file", interrupted)
    out = tmp_path / "out" / "py.jsonl"
    result = cli("data", "harvest", "python", tmp_path, "--out", out, "--workers", "1")
    assert result.code == 130
    assert not out.exists() and list(out.parent.iterdir()) == []
