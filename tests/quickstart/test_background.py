"""The from-scratch fine-tuning runs in a second process: it must stop when the main process
does, however that ends, so that no orphan goes on training into the run directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

CHILD = """
import signal
import time
from pathlib import Path


def child(directory: str, ignore_sigint: bool) -> None:
    from lmforge.quickstart import stop_with_parent

    if ignore_sigint:  # as a shell's background job leaves it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_with_parent()
    Path(directory, "ready").write_text("")
    try:
        time.sleep(120)
    except KeyboardInterrupt:  # where the training loop checkpoints and stops
        Path(directory, "stopped").write_text("")
"""

PARENT = """
import multiprocessing
import sys
import time

import bgchild

if __name__ == "__main__":
    directory, ignore = sys.argv[1], sys.argv[2] == "ignore"
    process = multiprocessing.get_context("spawn").Process(
        target=bgchild.child, args=(directory, ignore), daemon=True
    )
    process.start()
    print(process.pid, flush=True)
    time.sleep(120)
"""


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie (exited, not yet reaped by its dead parent's adopter) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().split(")")[-1].split()[0] == "Z"


def wait_for(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("ignore_sigint", [False, True])
def test_the_background_stage_stops_when_the_main_process_is_killed(
    tmp_path: Path, ignore_sigint: bool
) -> None:
    (tmp_path / "bgchild.py").write_text(textwrap.dedent(CHILD))
    (tmp_path / "parent.py").write_text(textwrap.dedent(PARENT))
    parent = subprocess.Popen(
        [sys.executable, "parent.py", str(tmp_path), "ignore" if ignore_sigint else "handle"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = 0
    try:
        child = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert wait_for((tmp_path / "ready").is_file), "the child did not start"
        parent.send_signal(signal.SIGKILL)  # no handler, no atexit: nothing of the parent runs
        parent.wait(10)
        assert wait_for(lambda: gone(child)), "the child outlived its parent"
        # stopped as by Ctrl-C (the loop checkpoints), even where SIGINT was ignored
        assert (tmp_path / "stopped").is_file()
    finally:
        if parent.poll() is None:
            parent.kill()
        if child and not gone(child):
            os.kill(child, signal.SIGKILL)
