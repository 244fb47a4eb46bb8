"""``lmforge eval run`` and ``lmforge eval humaneval``: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

import lmforge.cli.evaluate  # noqa: F401 - registers ``eval`` on the app

TESTS = Path(__file__).parents[1]
TINY = runpy.run_path(str(TESTS / "backends" / "tiny_models.py"))
FAKE = runpy.run_path(str(TESTS / "backends" / "fake_openai.py"))
KEY = "sk-cli-0b1d-SECRET"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-eval")
    tok = TINY["tokenizer"]()
    return {
        "t5": TINY["save_model"](root / "t5", "t5", tok),
        "data": TINY["translation_file"](root / "zh.jsonl"),
    }


def test_eval_run_from_flags_prints_the_scores_and_writes_the_run(
    cli, files, tmp_path, monkeypatch
):
    monkeypatch.setenv("LMFORGE_CLI_KEY", KEY)
    answers = {f"translate English to Chinese: {en}": zh for en, zh in TINY["PAIRS"]}
    with FAKE["FakeOpenAI"](lambda prompt: answers[prompt]) as server:
        result = cli(
            "eval", "run",
            "--model", f"tiny={files['t5']}",
            "--remote", f"ref={server.url}#fake",
            "--api-key-env", "LMFORGE_CLI_KEY",
            "--data", files["data"], "--task", "translate",
            "--column", "source=en", "--column", "target=zh",
            "--on", "all", "--metrics", "bleu,rouge", "--max-new-tokens", "4",
            "--out", tmp_path / "run",
        )  # fmt: skip
    assert result.code == 0, result.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert list(metrics["results"]) == ["tiny", "ref"]
    assert metrics["datasets"]["zh"]["examples"] == 10
    assert metrics["results"]["ref"]["zh"]["metrics"]["bleu"]["score"] == pytest.approx(100.0)
    assert "100.00" in result.out and "tiny" in result.out and "rougeL" in result.out
    assert f"report: {tmp_path / 'run' / 'report.md'}" in result.out
    assert KEY not in result.out + result.err
    assert KEY not in (tmp_path / "run" / "config.yaml").read_text()


def test_a_bad_config_is_one_line_and_exit_2(cli, tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text("models:\n  - path: m\ndata:\n  - path: x.jsonl\nmetric: [bleu]\n")
    result = cli("eval", "run", config)
    assert result.code == 2
    assert result.err.strip().count("\n") == 0
    assert result.err.startswith(f"lmforge: error: {config}: 1 config problem: metric: unknown key")
    assert "did you mean 'metrics'?" in result.err


def test_an_unreachable_endpoint_is_one_line_and_exit_2(cli, files, tmp_path):
    port = FAKE["closed_port"]()
    result = cli(
        "eval", "run", "--model", files["t5"],
        "--remote", f"r=http://127.0.0.1:{port}/v1#m", "--api-key-env", "none",
        "--data", files["data"], "--task", "translate", "--column", "source=en",
        "--column", "target=zh", "--on", "all", "--out", tmp_path / "run",
    )  # fmt: skip
    assert result.code == 2 and "Traceback" not in result.err
    assert "loading" not in result.err  # endpoints are reached before local models load
    last = result.err.strip().splitlines()[-1]  # after the data's progress lines
    assert last == (
        f"lmforge: error: model r: cannot reach http://127.0.0.1:{port}/v1 ([Errno 111] "
        "Connection refused); check base_url and that the server is running"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--remote", "r=http://127.0.0.1:1/v1"], "expected BASE_URL#MODEL"),
        (["--remote", "http://127.0.0.1:1/v1#m"], "expected NAME=BASE_URL#MODEL"),
        (["--model", "m", "--column", "zh"], "--column 'zh': expected FIELD=COLUMN"),
        (["--model", "m", "--set", "seed"], "expected KEY=VALUE"),
        ([], "models: List should have at least 1 item"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(cli, files, args, message):
    result = cli("eval", "run", "--data", files["data"], "--task", "translate", *args)
    assert result.code == 2, result.err
    assert message in result.err and result.err.strip().count("\n") == 0


def test_humaneval_against_an_endpoint_serving_canonical_solutions(cli, tmp_path):
    from lmforge.humaneval import load_problems

    solutions = {p["prompt"]: p["canonical_solution"] for p in load_problems().values()}
    with FAKE["FakeOpenAI"](lambda prompt: solutions[prompt]) as server:
        result = cli(
            "eval", "humaneval", f"{server.url}#fake", "--api-key-env", "none",
            "--limit", "5", "--k", "1,10", "--temperature", "0", "--out", tmp_path / "he",
        )  # fmt: skip
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "pass@1: 100.00  (5 problems, n=1)"
    assert lines[1].startswith("pass@10: not reported: 5 of 5 problems have fewer than 10")
    samples = (tmp_path / "he" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(s)["task_id"] for s in samples] == [f"HumanEval/{i}" for i in range(5)]
    assert all(line.startswith("warning: ") for line in result.err.splitlines())


def test_humaneval_refuses_a_bad_k_and_an_existing_out(cli, tmp_path):
    result = cli("eval", "humaneval", "m", "--k", "1,ten")
    assert result.code == 2 and "--k '1,ten': expected comma-separated integers" in result.err
    (tmp_path / "he").mkdir()
    result = cli("eval", "humaneval", "m", "--out", tmp_path / "he")
    assert result.code == 2 and "already exists; pass --overwrite" in result.err


def test_eval_help_lists_both_verbs(cli):
    result = cli("eval", "--help")
    assert result.code == 0
    assert "run" in result.out and "humaneval" in result.out


def test_humaneval_reads_a_problems_file_and_counts_a_wrong_completion(cli, tmp_path):
    problems = tmp_path / "toy.jsonl"
    toy = {
        "task_id": "Toy/0",
        "prompt": "def add(a, b):\n",
        "canonical_solution": "    return a + b\n",
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
        "entry_point": "add",
    }
    problems.write_text(json.dumps(toy) + "\n")
    with FAKE["FakeOpenAI"](lambda prompt: "    return a - b\n") as server:
        result = cli(
            "eval", "humaneval", f"{server.url}#fake", "--api-key-env", "none",
            "--problems", problems, "--k", "1", "--temperature", "0", "--out", tmp_path / "he",
        )  # fmt: skip
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == "pass@1: 0.00  (1 problems, n=1)"
    rows = (tmp_path / "he" / "samples.jsonl_results.jsonl").read_text().splitlines()
    assert json.loads(rows[0])["result"] == "failed: "
