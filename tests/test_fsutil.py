from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lmforge.errors import UserError
from lmforge.fsutil import atomic_dir, atomic_file, write_jsonl_atomic


def test_atomic_file_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write("half")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_replaces_and_uses_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    assert write_jsonl_atomic(target, [{"a": 1}, {"b": "中文"}]) == 2
    assert target.read_text(encoding="utf-8") == '{"a": 1}\n{"b": "中文"}\n'
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_atomic_dir_refuses_existing_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        with atomic_dir(target):
            pass
    with pytest.raises(RuntimeError), atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b.txt"]
