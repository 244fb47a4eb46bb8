from __future__ import annotations

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
