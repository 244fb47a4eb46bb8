"""The quickstart's split does not depend on where Python or the virtual environment lives."""

from __future__ import annotations

from lmforge.quickstart.tasks import build_tasks, portable_path


def test_portable_path_starts_at_the_library_root():
    venv = "/home/ana/lmforge/.venv/lib/python3.11/site-packages/requests/api.py"
    assert portable_path(venv) == "site-packages/requests/api.py"
    assert portable_path("/usr/lib/python3/dist-packages/six.py") == "dist-packages/six.py"
    stdlib = "/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/events.py"
    assert portable_path(stdlib) == "python3.11/asyncio/events.py"
    assert portable_path("/srv/code/tool.py") == "/srv/code/tool.py"  # no root: unchanged


def _row(path: str, i: int) -> dict:
    code = f"def f{i}(x):\n    y = x + {i}\n    return y"
    return {
        "name": f"f{i}",
        "signature": f"def f{i}(x):",
        "code": code,
        "body": f"y = x + {i}\nreturn y",
        "docstring": f"Add {i} to the number x.",
        "summary": f"Add {i} to the number x.",
        "path": path,
        "provenance": f"python:{path}:{i}",
    }


def test_two_checkouts_of_one_machine_get_the_same_split():
    files = [f"pkg{i}/mod.py" for i in range(40)]

    def splits(prefix: str) -> dict[str, list[str]]:
        rows = [_row(f"{prefix}/site-packages/{f}", i) for i, f in enumerate(files)]
        tasks = build_tasks(rows, [], seed=7)["code-comment"]
        return {split: [e["name"] for e in examples] for split, examples in tasks.items()}

    first = splits("/tmp/a/.venv/lib/python3.11")
    assert first == splits("/home/b/lmforge/.venv/lib/python3.11")
    assert first["test"] and first["train"]  # 40 files: both splits are used
