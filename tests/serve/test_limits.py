"""API keys from a file or the environment, constant-time matching, option checks."""

from __future__ import annotations

import pytest

from lmforge.errors import UserError
from lmforge.serve.limits import ServeOptions, key_matches, load_api_keys


def test_keys_come_from_a_file_without_blanks_and_comments(tmp_path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# team keys\nalpha\n\n  beta  \n", encoding="utf-8")
    assert load_api_keys(path, environ={"LMFORGE_API_KEY": "ignored"}) == ("alpha", "beta")


def test_keys_come_from_the_environment_when_no_file_is_given() -> None:
    assert load_api_keys(None, environ={"LMFORGE_API_KEY": "a, b,"}) == ("a", "b")
    assert load_api_keys(None, environ={}) == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [("# only a comment\n", "holds no key"), ("two words\n", "key 1 holds spaces")],
)
def test_a_bad_key_file_is_a_user_error(tmp_path, text, message) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        load_api_keys(path)
    with pytest.raises(UserError, match="does not exist"):
        load_api_keys(tmp_path / "missing.txt")


def test_key_matches_only_a_configured_key() -> None:
    keys = ("alpha", "beta")
    assert key_matches("beta", keys) and key_matches("alpha", keys)
    assert not key_matches("alph", keys) and not key_matches("", keys)
    assert not key_matches("alpha", ())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_batch_size": 0}, "--max-batch-size must be at least 1"),
        ({"max_queue": 0}, "--max-queue must be at least 1"),
        ({"max_wait_ms": -1}, "--max-wait-ms must be 0 or more"),
        ({"request_timeout": 0}, "--request-timeout must be > 0"),
        ({"max_prompt_tokens": 0}, "--max-prompt-tokens must be at least 1"),
        ({"model_name": " "}, "--model-name must not be empty"),
    ],
)
def test_options_out_of_range_are_user_errors(fields, message) -> None:
    with pytest.raises(UserError, match=message):
        ServeOptions(**fields).check()
    ServeOptions().check()
