from __future__ import annotations

import pytest

from lmforge import __version__


def test_version(cli) -> None:
    result = cli("--version")
    assert result.code == 0
    assert result.out.strip() == f"lmforge {__version__}"


def test_help_lists_verbs(cli) -> None:
    result = cli("--help")
    assert result.code == 0
    for verb in ("data", "tokenizer"):
        assert verb in result.out


def test_unknown_command_is_usage_error(cli) -> None:
    result = cli("no-such-verb")
    assert result.code == 2
    assert "Traceback" not in result.err


def test_no_arguments_shows_the_help(cli) -> None:
    result = cli()
    assert result.code == 2
    assert "Usage: lmforge" in result.out + result.err and "pretrain" in result.out + result.err


def test_help_of_a_verb(cli) -> None:
    result = cli("generate", "--help")
    assert result.code == 0 and "--max-new-tokens" in result.out and result.err == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["generate", "model", "hi", "--max-new-tokens", "abc"],
            "lmforge generate: Invalid value for '--max-new-tokens': ",
        ),
        (["generate"], "lmforge generate: Missing argument 'MODEL_DIR'"),
        (["generate", "model", "--bogus"], "lmforge generate: No such option: --bogus"),
        (["no-such-verb"], "lmforge: No such command 'no-such-verb'"),
        (["pretrain", "a.yaml", "b.yaml"], "lmforge pretrain: Got unexpected extra argument"),
    ],
)
def test_usage_errors_are_one_line_with_the_command(cli, args, message) -> None:
    result = cli(*args)
    assert result.code == 2
    assert result.out == ""
    assert len(result.err.splitlines()) == 1, result.err
    assert result.err.startswith(f"lmforge: error: {message}")
    command = message.split(":")[0]
    assert result.err.rstrip().endswith(f"(see {command} --help)")


def test_user_errors_are_one_line(cli, tmp_path) -> None:
    result = cli("pretrain", tmp_path / "missing.yaml")
    assert result.code == 2
    assert result.err == f"lmforge: error: config file {tmp_path / 'missing.yaml'} does not exist\n"


def test_ctrl_c_is_one_line_and_exit_130(cli, tmp_path, monkeypatch) -> None:
    import lmforge.runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lmforge.runs, "run_training", interrupted)
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  - path: a.jsonl\n", encoding="utf-8")
    result = cli("pretrain", config)
    assert result.code == 130
    assert result.err == "lmforge: interrupted\n"
