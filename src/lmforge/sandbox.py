"""Run untrusted Python programs (model-written code) in a separate, limited process.

Each program runs as ``python -I main.py`` in a fresh temporary working directory that is
removed afterwards, in its own session and process group, with:

* a wall-clock timeout, after which everything it started is killed (SIGKILL);
* ``setrlimit`` limits: CPU seconds, address space (memory), size of files written, open
  files, no core dumps, and (where it counts only the program's processes) processes;
* an environment holding only a minimal ``PATH``, ``HOME`` (the working directory) and
  ``LANG``: nothing of the caller's (API keys, tokens) reaches it;
* stdout and stderr read through pipes and capped: a program that prints more is killed;
* where the machine allows it (``unshare`` from util-linux), new network and PID
  namespaces. The network namespace has only a loopback device that is down, so the program
  reaches nothing, not even the caller's localhost. When the program ends, the PID
  namespace takes every process it started with it;
* when lmforge runs as root, an unprivileged uid of its own (no account, no files), so
  ``RLIMIT_NPROC`` contains fork bombs (it never limits root), the program can write only
  where everyone may (its working directory, ``/tmp``) and cannot signal the caller; at the
  end every process of that uid is killed.

What it does NOT protect against: this is a guard rail for evaluating generated code, not a
security boundary against a determined attacker the way a VM or gVisor is. The program shares
the kernel with the caller (a kernel bug is an escape), can read every file its uid may read
(most of the filesystem), can write to world-writable places such as ``/tmp``, and can use
CPU and memory up to the limits. Without ``unshare`` it has network access; without root it
runs as the caller's own user, so it can write the caller's files (and, without namespaces,
signal the caller's processes and leave detached processes behind). Every such gap is
reported: :func:`isolation` lists it, a :class:`SandboxWarning` is raised once, and each
:class:`ExecutionResult` says whether it ran network-isolated and unprivileged.
docs/sandbox.md says the same at more length.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import queue
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

Status = Literal["passed", "failed", "timeout", "output_limit", "error"]

MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
# Uids for programs when lmforge runs as root: one per concurrently running program, so each
# gets its own RLIMIT_NPROC count and can be swept with kill(-1). systemd's UIDS-GIDS table
# leaves 1879048192-2147352575 unassigned; these have no account and own no files.
SANDBOX_UID_BASE = 1_879_048_192
_UID_POOL_SIZE = 256
_UNSHARE = "unshare"
_PRLIMIT = "prlimit"
_KILL = "kill"
_PROBE_TIMEOUT = 20.0
# util-linux < 2.40 prints this and exits 1 instead of dying by SIGKILL when the program it
# forked was SIGKILLed (util-linux issue #2614, fixed by pull request #2617).
_UNSHARE_SIGKILL_BUG = "unshare: sigprocmask unblock failed: Invalid argument\n"
# How the wrappers say that they, not the program, failed (no namespace, no process slot).
_WRAPPER_FAILED = ("unshare: ", "prlimit: ")


class SandboxWarning(UserWarning):
    """A protection the sandbox could not set up on this machine."""


@dataclass(frozen=True)
class ExecutionResult:
    """How one program ended. ``status`` is ``passed`` only for exit status 0."""

    status: Status
    exit_code: int | None  # negative: killed by that signal (as in subprocess)
    stdout: str
    stderr: str
    duration: float  # wall-clock seconds
    network_isolated: bool
    unprivileged: bool  # ran as a uid other than root's

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Isolation:
    """What the sandbox can do on this machine, found once by trying it."""

    python: str  # the interpreter programs run with
    network_isolated: bool  # new network + PID namespaces via unshare
    unprivileged: bool  # programs run as a uid of their own (only possible as root)
    warnings: tuple[str, ...]


def _free_uids() -> queue.Queue[int]:
    uids: queue.Queue[int] = queue.Queue()
    for offset in range(_UID_POOL_SIZE):
        uids.put(SANDBOX_UID_BASE + offset)
    return uids


# FIFO: a uid just swept goes to the back, so it is reused only after 255 other programs.
_UID_POOL = _free_uids()


def _namespace_prefix(uid: int | None, max_processes: int) -> list[str]:
    if uid is not None:  # root: create the namespaces, then become the unprivileged uid
        return [_UNSHARE, "--net", "--pid", "--fork", f"--setuid={uid}", f"--setgid={uid}", "--"]
    # Not root: a user namespace lets an ordinary user create the other two. RLIMIT_NPROC is
    # set inside it, where it counts only the program's processes; set before, it would also
    # count every other process of the user (and the namespace would inherit that ceiling).
    return [
        *(_UNSHARE, "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--"),
        *(_PRLIMIT, f"--nproc={max_processes}:{max_processes}", "--"),
    ]


def _drop_privileges(uid: int) -> dict[str, object]:
    return {"user": uid, "group": uid, "extra_groups": []}


def _probe(argv: list[str], uid: int | None, in_namespaces: bool) -> str | None:
    """Run ``argv`` the way programs will run; its stdout if it worked, else None."""
    command = [*_namespace_prefix(uid, 64), *argv] if in_namespaces else argv
    extra = _drop_privileges(uid) if uid is not None and not in_namespaces else {}
    try:
        done = subprocess.run(
            command,
            env=_environment(tempfile.gettempdir()),
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT,
            **extra,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode(errors="replace").strip() if done.returncode == 0 else None


def _interpreters(python: str) -> list[str]:
    """``python`` first, then same-version interpreters an unprivileged uid can usually run."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = [shutil.which(name, path=MINIMAL_PATH) for name in (f"python{version}", "python3")]
    return list(dict.fromkeys([python, *(p for p in found if p)]))


@functools.cache
def _isolation(python: str) -> Isolation:
    root = os.geteuid() == 0
    uid = SANDBOX_UID_BASE if root else None
    notes: list[str] = []
    in_namespaces = _probe(["true"], uid, in_namespaces=True) is not None
    if not in_namespaces:
        notes.append(
            "network isolation is OFF: `unshare` could not create network and PID namespaces "
            "here, so sandboxed programs can reach the network (including this machine's "
            "localhost) and a detached process may outlive its timeout"
        )
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    check = ["-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
    chosen = None
    for candidate in _interpreters(python) if root else [python]:
        if _probe([candidate, *check], uid, in_namespaces) == version:
            chosen = candidate
            break
    if chosen is None:
        chosen, uid = python, None
        if root:
            notes.append(
                f"programs run as ROOT: no Python {version} that an unprivileged uid may run "
                f"was found ({python} is not readable by other users), so RLIMIT_NPROC does not "
                "stop fork bombs and programs can write anywhere"
            )
    elif chosen != python:
        notes.append(
            f"programs run with {chosen}, not {python}: an unprivileged uid may not run the "
            "latter (its files are not readable by other users), so packages installed only "
            "for it cannot be imported in the sandbox"
        )
    if not root:
        notes.append(
            "programs run as your own user, so they can write your files"
            + ("" if in_namespaces else ", signal your processes and fork without limit")
            + " (as root, lmforge gives each program a uid of its own)"
        )
    for note in notes:
        warnings.warn(f"sandbox: {note}", SandboxWarning, stacklevel=3)
    return Isolation(chosen, in_namespaces, uid is not None, tuple(notes))


def isolation(python: str | None = None) -> Isolation:
    """Which protections work here (tried once per interpreter, then cached)."""
    return _isolation(python or sys.executable)


def _environment(workdir: str) -> dict[str, str]:
    return {"PATH": MINIMAL_PATH, "HOME": workdir, "LANG": "C.UTF-8"}


def _resource_limits(
    cpu_seconds: float,
    memory_mb: int,
    max_file_mb: int,
    max_processes: int | None,
    max_open_files: int,
) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) for setrlimit, never above the caller's own hard limits."""
    cpu = math.ceil(cpu_seconds)
    wanted = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL at the hard
        (resource.RLIMIT_AS, memory_mb << 20, memory_mb << 20),
        (resource.RLIMIT_FSIZE, max_file_mb << 20, max_file_mb << 20),
        (resource.RLIMIT_NOFILE, max_open_files, max_open_files),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if max_processes is not None:
        wanted.append((resource.RLIMIT_NPROC, max_processes, max_processes))
    limits = []
    for which, soft, hard in wanted:
        ceiling = resource.getrlimit(which)[1]
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        limits.append((which, soft, hard))
    return limits


def _set_limits(limits: list[tuple[int, int, int]]) -> None:
    # Runs in the child between fork and exec (preexec_fn). It only calls setrlimit from an
    # already-imported module and takes no locks, so the threads of run_many cannot deadlock it.
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))


def _exited(pid: int) -> bool:
    """True once ``pid`` has ended; it stays unreaped, so its group id cannot be reused."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid``, including ones that left the group with setsid.

    ``kill -9 -1`` run as that uid signals all its processes at once; the kernel holds off
    new forks while it runs, so a fork bomb cannot outpace it.
    """
    subprocess.run(
        [_KILL, "-9", "-1"],
        env=_environment("/"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        **_drop_privileges(uid),
    )


class _CappedReader:
    """Reads a program's stdout and stderr, keeping at most ``cap`` bytes of each."""

    def __init__(self, proc: subprocess.Popen[bytes], cap: int) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc, self.cap = proc, cap
        self.buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
        self.selector = selectors.DefaultSelector()
        for stream in (proc.stdout, proc.stderr):
            self.selector.register(stream, selectors.EVENT_READ)

    @property
    def open(self) -> bool:
        return bool(self.selector.get_map())

    def pump(self, deadline: float, until_exit: bool) -> str:
        """Read until the pipes close (or the program exits); "timeout" or "output_limit"."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            if not self.open:
                if not until_exit or _exited(self.proc.pid):
                    return "exited"
                time.sleep(min(remaining, 0.01))  # it closed its pipes but still runs
                continue
            for key, _ in self.selector.select(min(remaining, 0.1)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    self.selector.unregister(key.fileobj)
                    continue
                buffer = self.buffers[key.fd]
                buffer += chunk[: self.cap + 1 - len(buffer)]
                if len(buffer) > self.cap:
                    return "output_limit"
            if until_exit and _exited(self.proc.pid):
                return "exited"  # a leftover child may still hold the pipes: drain later

    def text(self, stream: object) -> str:
        data = self.buffers[stream.fileno()][: self.cap]  # type: ignore[attr-defined]
        return data.decode("utf-8", errors="replace")

    def close(self) -> None:
        self.selector.close()


def _finish(
    proc: subprocess.Popen[bytes], reader: _CappedReader, uid: int | None, sweep: bool
) -> int:
    """Kill whatever the program left running and return its exit status."""
    if uid is not None and sweep:
        _kill_uid(uid)
        # A namespace wrapper exits once its PID namespace is empty; wait for that so the
        # uid goes back to the pool with no processes left. Keep reading meanwhile: the
        # wrapper may write to a pipe we stopped reading, and would block there.
        give_up = time.monotonic() + 5.0
        while not _exited(proc.pid) and time.monotonic() < give_up:
            if reader.open:
                reader.pump(time.monotonic() + 0.01, until_exit=False)
            else:
                time.sleep(0.01)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group leader is unreaped: no pgid reuse
    except (ProcessLookupError, PermissionError):
        pass
    return proc.wait()


def run_program(
    code: str,
    *,
    timeout: float,
    memory_mb: int = 512,
    cpu_seconds: float | None = None,
    max_output_bytes: int = 1 << 20,
    max_processes: int = 32,
    max_open_files: int = 64,
    max_file_mb: int = 16,
    python: str | None = None,
) -> ExecutionResult:
    """Run ``code`` as a Python program in the sandbox and say how it ended.

    ``cpu_seconds`` defaults to the timeout (a backstop: the wall clock is the real limit);
    ``max_processes`` counts threads too.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    setup = isolation(python)
    # RLIMIT_NPROC counts all processes of a uid: set here only for a uid of the program's
    # own (root never is limited by it; a user's limit would count their other processes).
    limits = _resource_limits(
        cpu_seconds or timeout,
        memory_mb,
        max_file_mb,
        max_processes if setup.unprivileged else None,
        max_open_files,
    )
    uid = _UID_POOL.get() if setup.unprivileged else None
    workdir = tempfile.mkdtemp(prefix="lmforge-sandbox-")
    try:
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as handle:
            handle.write(code)
        argv = [setup.python, "-I", "main.py"]
        extra: dict[str, object] = {}
        if setup.network_isolated:
            argv = [*_namespace_prefix(uid, max_processes), *argv]
        elif uid is not None:
            extra = _drop_privileges(uid)
        if uid is not None:
            os.chown(workdir, uid, uid)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=_environment(workdir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=functools.partial(_set_limits, limits),
                **extra,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return ExecutionResult(
                "error", None, "", f"sandbox could not start the program: {exc}",
                time.monotonic() - start, setup.network_isolated, setup.unprivileged,
            )  # fmt: skip
        with proc:
            reader = _CappedReader(proc, max_output_bytes)
            try:
                reason = reader.pump(start + timeout, until_exit=True)
                duration = time.monotonic() - start
                # Inside namespaces an exited program leaves nothing behind; otherwise sweep.
                sweep = reason != "exited" or not setup.network_isolated
                returncode = _finish(proc, reader, uid, sweep)
                if reason == "exited":  # read what is left in the pipes
                    if reader.pump(time.monotonic() + 1.0, until_exit=False) == "output_limit":
                        reason = "output_limit"
                stdout, stderr = reader.text(proc.stdout), reader.text(proc.stderr)
                if setup.network_isolated and stderr.endswith(_UNSHARE_SIGKILL_BUG):
                    stderr = stderr[: -len(_UNSHARE_SIGKILL_BUG)]
                    returncode = -signal.SIGKILL if returncode == 1 else returncode
            finally:
                reader.close()
    finally:
        if uid is not None:
            _UID_POOL.put(uid)
        _remove_tree(workdir)
    status: Status
    wrapper_failed = setup.network_isolated and returncode != 0
    if reason == "exited" and wrapper_failed and stderr.startswith(_WRAPPER_FAILED):
        status = "error"  # the sandbox failed, not the program
    elif reason == "exited":
        status = "passed" if returncode == 0 else "failed"
    else:
        status = "timeout" if reason == "timeout" else "output_limit"
    return ExecutionResult(
        status,
        returncode if reason == "exited" else None,
        stdout,
        stderr,
        duration,
        setup.network_isolated,
        setup.unprivileged,
    )


def _remove_tree(path: str) -> None:
    """Delete the working directory.

    Root may delete anything. Any other user first gives write permission back to
    directories the program locked, never through a symlink the program may have planted.
    """
    if os.geteuid() != 0 and not os.path.islink(path):
        for parent, dirs, _files in os.walk(path):
            for name in dirs:
                child = os.path.join(parent, name)
                if not os.path.islink(child):
                    with contextlib.suppress(OSError):
                        os.chmod(child, 0o700)
    if os.path.islink(path):
        os.unlink(path)
    shutil.rmtree(path, ignore_errors=True)


def run_many(
    programs: Sequence[str],
    *,
    workers: int | None = None,
    timeout: float,
    python: str | None = None,
    **limits: int | float | None,
) -> list[ExecutionResult]:
    """Run ``programs`` in parallel (``workers`` at a time, default one per core).

    Results come back in the order of ``programs``. Each program has its own sandbox, so a
    hostile one cannot stop the others; ``limits`` are :func:`run_program`'s keywords.
    """
    isolation(python)  # probe once here, not in several threads at the same time
    run = functools.partial(run_program, timeout=timeout, python=python, **limits)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(run, programs))
