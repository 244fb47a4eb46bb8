"""Hostile programs are contained while the evaluator, and normal programs beside them, carry on.

All hostile programs run in one ``run_many`` call, two at a time, interleaved with normal
programs, under small limits (2 s, 256 MB, 16 processes, 64 KiB of output): quick and safe on
a 2-core machine. Where this machine cannot isolate something (no ``unshare``, not root),
the tests check that the sandbox says so instead.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from lmforge import sandbox
from lmforge.sandbox import SandboxWarning, isolation, run_many, run_program

TIMEOUT = 2.0
LIMITS = {"memory_mb": 256, "max_processes": 16, "max_output_bytes": 1 << 16}
NORMAL = "print(sum(range(10)))"
SECRET = "sk-lmforge-test-" + uuid.uuid4().hex
PROJECT = Path(__file__).resolve().parents[1]


def fork_bomb(marker: str) -> str:
    """Forks forever; re-executes first so every copy carries ``marker`` in /proc/PID/cmdline.

    Each copy naps 10 ms when fork fails, so the copies do not starve the normal programs of
    CPU on a loaded 2-core machine: what is tested is the process limit and the cleanup
    (the infinite loop is the CPU hog).
    """
    bomb = (
        "import os, time\n"
        "said = False\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError as exc:\n"
        "        if not said:\n"
        "            print('fork failed:', exc.strerror, flush=True)\n"
        "            said = True\n"
        "        time.sleep(0.01)\n"
    )
    argv = f"[sys.executable, '-I', '-c', {bomb!r}, {marker!r}]"
    return f"import os, sys\nos.execv(sys.executable, {argv})\n"


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def try_write(paths: list[Path]) -> str:
    return (
        "import json\nout = {}\n"
        f"for path in {[str(p) for p in paths]!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('escaped')\n"
        "        out[path] = 'written'\n"
        "    except OSError as exc:\n"
        "        out[path] = type(exc).__name__\n"
        "print(json.dumps(out))\n"
    )


def connect_to(port: int) -> str:
    return (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
        "    print('connected')\n"
        "except OSError as exc:\n"
        "    print('blocked', exc)\n"
    )


def kill_parent(pid: int) -> str:
    """Tries every way to reach the evaluator: its pid, its process group, the parent."""
    return (
        "import os, signal\n"
        f"pid, pgid = {pid}, {os.getpgid(pid)}\n"
        "attempts = {'pid': lambda: os.kill(pid, signal.SIGKILL),\n"
        "            'pgid': lambda: os.killpg(pgid, signal.SIGKILL),\n"
        "            'pgid_of_pid': lambda: os.killpg(os.getpgid(pid), signal.SIGKILL),\n"
        "            'parent': lambda: os.kill(os.getppid(), signal.SIGKILL)}\n"
        "for name, attempt in attempts.items():\n"
        "    try:\n"
        "        attempt()\n"
        "        print(name, 'sent')\n"
        "    except OSError as exc:\n"
        "        print(name, type(exc).__name__)\n"
    )


@pytest.fixture(scope="module")
def listener():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        yield server


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, listener):
    """Run every hostile program at once, beside normal ones; results by name."""
    marker = "lmforge-fork-bomb-" + uuid.uuid4().hex
    outside = tmp_path_factory.mktemp("outside")
    targets = [outside / "escaped.txt", PROJECT / f".escaped-{marker}", Path.home() / marker]
    programs = {
        "normal_first": NORMAL,
        "infinite_loop": "while True:\n    pass\n",
        "fork_bomb": fork_bomb(marker),
        "normal_beside_bomb": NORMAL,
        "memory_bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 20))\n",
        "huge_output": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
        "write_outside": try_write(targets),
        "environment": "import json, os\nprint(json.dumps(dict(os.environ)))\n",
        "network": connect_to(listener.getsockname()[1]),
        "normal_last": NORMAL,
    }
    setup = isolation()
    if setup.unprivileged or setup.network_isolated:
        programs["kill_parent"] = kill_parent(os.getpid())
    # else the program runs as this very user in this PID namespace: nothing stops it
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMFORGE_TEST_API_KEY", SECRET)
        start = time.monotonic()
        results = run_many(list(programs.values()), workers=2, timeout=TIMEOUT, **LIMITS)
        elapsed = time.monotonic() - start
    leftovers = processes_with(marker)
    written = [t for t in targets if t.exists()]
    for target in written:
        target.unlink()
    return {
        "results": dict(zip(programs, results, strict=True)),
        "elapsed": elapsed,
        "leftovers": leftovers,
        "written": written,
        "targets": targets,
        "setup": setup,
    }


def test_normal_programs_pass_beside_hostile_ones(hostile):
    for name in ("normal_first", "normal_beside_bomb", "normal_last"):
        result = hostile["results"][name]
        assert (result.status, result.exit_code, result.stdout) == ("passed", 0, "45\n")
    # ten programs, two at a time, the slow ones stopped at 2 s: the batch stays quick
    assert hostile["elapsed"] < 4 * TIMEOUT


def test_infinite_loop_times_out(hostile):
    result = hostile["results"]["infinite_loop"]
    assert result.status == "timeout" and result.exit_code is None
    assert TIMEOUT <= result.duration < TIMEOUT + 1.0


def test_fork_bomb_is_contained_and_every_copy_killed(hostile):
    result = hostile["results"]["fork_bomb"]
    assert result.status == "timeout"
    if result.unprivileged:  # RLIMIT_NPROC holds (it never does for root)
        failures = result.stdout.splitlines()
        assert failures and set(failures) == {"fork failed: Resource temporarily unavailable"}
        assert len(failures) <= LIMITS["max_processes"]
    assert hostile["leftovers"] == []


def test_memory_bomb_hits_the_address_space_limit(hostile):
    result = hostile["results"]["memory_bomb"]
    assert result.status == "failed" and result.exit_code == 1
    assert "MemoryError" in result.stderr
    assert result.duration < TIMEOUT  # stopped by the limit, not the clock


def test_huge_output_is_capped_and_the_program_stopped(hostile):
    result = hostile["results"]["huge_output"]
    assert result.status == "output_limit"
    assert result.stdout == "x" * LIMITS["max_output_bytes"]
    assert result.duration < TIMEOUT  # killed at the cap, not read until the timeout


def test_writing_outside_the_working_directory(hostile):
    result = hostile["results"]["write_outside"]
    outcome = json.loads(result.stdout)
    if result.unprivileged:
        # the program's uid owns nothing here: the project, the test's tmp dir, root's home
        assert hostile["written"] == []
        assert set(outcome.values()) == {"PermissionError"}
    else:
        # documented: run as the caller's own user, it can write where the caller can
        assert any("write" in note for note in hostile["setup"].warnings)


def test_the_parent_environment_does_not_leak(hostile):
    result = hostile["results"]["environment"]
    env = json.loads(result.stdout)
    assert SECRET not in result.stdout and "LMFORGE_TEST_API_KEY" not in env
    assert set(env) == {"PATH", "HOME", "LANG"}
    assert env["PATH"] == sandbox.MINIMAL_PATH


def test_network_is_unreachable_when_isolated(hostile, listener):
    result = hostile["results"]["network"]
    if hostile["setup"].network_isolated:
        assert result.network_isolated
        assert result.stdout.startswith("blocked")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    else:
        assert result.network_isolated is False
        assert any("network isolation is OFF" in n for n in hostile["setup"].warnings)


def test_killing_the_parent_fails(hostile):
    if "kill_parent" not in hostile["results"]:
        pytest.skip("programs run as this user in this PID namespace; they could kill it")
    result = hostile["results"]["kill_parent"]
    outcome = dict(line.split() for line in result.stdout.splitlines())
    # Nothing reached the evaluator by pid or group. The "parent" is the namespace wrapper
    # or, inside the PID namespace, pid 0 (the program's own group): whatever happened
    # there, this process is alive to check it, and the normal programs passed.
    assert {outcome[k] for k in ("pid", "pgid", "pgid_of_pid")} <= {
        "PermissionError",
        "ProcessLookupError",
    }
    os.kill(os.getpid(), 0)


def test_program_runs_isolated_in_a_fresh_directory_that_is_removed():
    code = "import os, sys\nprint(os.getcwd(), os.environ['HOME'], sys.flags.isolated)\n"
    result = run_program(code, timeout=TIMEOUT)
    cwd, home, isolated = result.stdout.split()
    assert result.status == "passed"
    assert cwd == home and isolated == "1"
    assert Path(cwd).parent == Path(tempfile.gettempdir())
    assert not Path(cwd).exists()


def test_crash_reports_the_signal_and_errors_the_exit_code():
    crash = run_program("import ctypes\nctypes.string_at(0)\n", timeout=TIMEOUT)
    assert (crash.status, crash.exit_code) == ("failed", -signal.SIGSEGV)
    error = run_program("raise SystemExit(3)", timeout=TIMEOUT)
    assert (error.status, error.exit_code) == ("failed", 3)
    syntax = run_program("def (", timeout=TIMEOUT)
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr


def test_cpu_limit_kills_a_busy_program_before_the_clock_does():
    result = run_program("while True:\n    pass\n", timeout=10, cpu_seconds=1)
    # SIGKILL at the hard limit (2 s) in a PID namespace, where PID 1 ignores SIGXCPU
    assert result.status == "failed" and result.duration < 5
    assert result.exit_code in (-signal.SIGKILL, -signal.SIGXCPU)
    assert result.stderr == ""  # no "unshare: sigprocmask unblock failed" from old util-linux


def test_stderr_is_capped_too():
    code = "import sys\nwhile True:\n    sys.stderr.write('e' * 4096)\n"
    result = run_program(code, timeout=TIMEOUT, max_output_bytes=10_000)
    assert result.status == "output_limit" and len(result.stderr) == 10_000


def test_bad_timeout_is_rejected():
    with pytest.raises(ValueError, match="timeout must be positive"):
        run_program("pass", timeout=0)


@pytest.fixture
def without_namespaces(monkeypatch):
    """Pretend ``unshare`` is missing, as on machines that forbid namespaces."""
    monkeypatch.setattr(sandbox, "_UNSHARE", "/nonexistent/unshare")
    sandbox._isolation.cache_clear()
    yield
    sandbox._isolation.cache_clear()


def test_without_namespaces_the_sandbox_says_network_is_open(without_namespaces, listener):
    with pytest.warns(SandboxWarning, match="network isolation is OFF"):
        setup = isolation()
    assert setup.network_isolated is False
    marker = "lmforge-fork-bomb-" + uuid.uuid4().hex
    programs = [connect_to(listener.getsockname()[1]), fork_bomb(marker), NORMAL]
    network, bomb, normal = run_many(programs, workers=2, timeout=TIMEOUT, **LIMITS)
    assert not network.network_isolated
    assert network.stdout.startswith("connected")  # what the warning warns about
    listener.accept()[0].close()
    assert bomb.status == "timeout" and normal.stdout == "45\n"
    if setup.unprivileged:  # the uid sweep still reaps every copy, even without a PID namespace
        assert processes_with(marker) == []
