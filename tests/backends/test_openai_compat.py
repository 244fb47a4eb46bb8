"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import math
import runpy
import time
from pathlib import Path

import pytest

from lmforge.backends import Backend, LikelihoodUnavailable
from lmforge.backends.openai_compat import OpenAICompatBackend
from lmforge.errors import UserError
from lmforge.generation import DecodingSettings

FAKE = runpy.run_path(str(Path(__file__).with_name("fake_openai.py")))
FakeOpenAI, closed_port, LOGPROB = FAKE["FakeOpenAI"], FAKE["closed_port"], FAKE["LOGPROB"]
KEY = "sk-test-4f9c-SECRET"
GREEDY = DecodingSettings(max_new_tokens=8)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("LMFORGE_TEST_KEY", KEY)


def backend(url: str, **kwargs) -> OpenAICompatBackend:
    return OpenAICompatBackend(url, "fake-model", api_key_env="LMFORGE_TEST_KEY", **kwargs)


def test_chat_answers_in_order_with_the_key_from_the_environment():
    with FakeOpenAI(lambda prompt: prompt.upper()) as server:
        remote = backend(server.url)
        assert isinstance(remote, Backend)
        assert remote.generate(["ab", "cd", "ef"], GREEDY) == [["AB"], ["CD"], ["EF"]]
        posts = server.generation_requests()
    assert [p["path"] for p in posts] == ["/v1/chat/completions"] * 3
    assert {p["authorization"] for p in posts} == {f"Bearer {KEY}"}
    body = posts[0]["body"]
    assert body["model"] == "fake-model"
    assert body["max_tokens"] == 8 and body["temperature"] == 0.0
    assert sorted(p["body"]["messages"][0]["content"] for p in posts) == ["ab", "cd", "ef"]
    assert body["messages"][0]["role"] == "user" and len(body["messages"]) == 1
    assert remote.usage.snapshot() == (6, 6)  # the fake counts one token per character
    assert KEY not in repr(remote)


def test_completions_mode_samples_n_with_seeds_and_cuts_at_stop_sequences():
    stops = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    with FakeOpenAI(lambda prompt: "    return 1\ndef more():\n") as server:
        remote = backend(server.url, mode="completions")
        sampling = DecodingSettings(max_new_tokens=8, do_sample=True, temperature=0.5, seed=7)
        assert remote.generate(["def f():\n"], sampling, n=3, stop=stops) == [["    return 1"] * 3]
        (post,) = server.generation_requests()
    assert post["path"] == "/v1/completions"
    assert post["body"]["prompt"] == "def f():\n"
    assert post["body"]["n"] == 3 and post["body"]["seed"] == 7
    assert post["body"]["temperature"] == 0.5
    assert post["body"]["stop"] == stops[:4]  # the API takes at most 4; all 5 are applied


def test_a_server_that_ignores_n_is_asked_again_for_the_rest():
    with FakeOpenAI(ignore_n=True) as server:
        remote = backend(server.url)
        sampling = DecodingSettings(do_sample=True, seed=1)
        assert remote.generate(["x"], sampling, n=3) == [["x", "x", "x"]]
        seeds = [p["body"]["seed"] for p in server.generation_requests()]
    assert seeds == [1, 2, 3]


def test_no_more_than_max_concurrency_requests_are_in_flight():
    with FakeOpenAI(delay=0.1) as server:
        remote = backend(server.url, max_concurrency=3)
        sources = [f"s{i}" for i in range(12)]
        start = time.perf_counter()
        assert remote.generate(sources, GREEDY) == [[s] for s in sources]
        elapsed = time.perf_counter() - start
    assert server.max_in_flight == 3
    assert elapsed >= 0.4  # 12 requests of 0.1 s, 3 at a time


def test_rate_limited_twice_then_answered_honours_retry_after():
    with FakeOpenAI(failures=[(429, {"Retry-After": "0.2"})] * 2) as server:
        assert backend(server.url, max_retries=5).generate(["hi"], GREEDY) == [["hi"]]
        times = [p["time"] for p in server.generation_requests()]
    assert len(times) == 3
    assert all(later - earlier >= 0.19 for earlier, later in zip(times, times[1:], strict=False))


def test_a_server_that_always_fails_gives_up_after_max_retries():
    with FakeOpenAI(always=(500, {"Retry-After": "0.01"})) as server:
        with pytest.raises(UserError) as caught:
            backend(server.url, max_retries=3).generate(["hi"], GREEDY)
        posts = server.generation_requests()
    assert len(posts) == 4  # the first attempt and 3 retries
    assert caught.value.message == (
        f"model fake-model: {server.url} answered HTTP 500: fake failure 500 (after 3 retries)"
    )


def test_an_unreachable_endpoint_fails_at_once_with_a_clear_error():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"cannot reach http://127\.0\.0\.1:\d+/v1 \("):
        backend(url, max_retries=5).generate(["hi"], GREEDY)
    assert time.perf_counter() - start < 5  # no backoff through 5 retries


def test_a_rejected_key_is_named_by_its_variable_and_never_shown():
    with FakeOpenAI(always=(401, {})) as server:
        with pytest.raises(UserError) as caught:
            backend(server.url).generate(["hi"], GREEDY)
    assert KEY not in str(caught.value)
    assert "Bearer ***" in caught.value.message
    assert caught.value.hint == "check the key in $LMFORGE_TEST_KEY (api_key_env)"


def test_an_unset_key_variable_is_named_when_the_endpoint_wants_one(monkeypatch):
    monkeypatch.delenv("LMFORGE_TEST_KEY")
    with FakeOpenAI(always=(401, {})) as server:
        with pytest.raises(UserError) as caught:
            backend(server.url).generate(["hi"], GREEDY)
        assert server.generation_requests()[0]["authorization"] == "Bearer EMPTY"
    assert caught.value.hint == "set the API key in $LMFORGE_TEST_KEY"


def test_unsupported_settings_are_reported_not_sent():
    remote = backend("http://127.0.0.1:1/v1")
    notes = remote.unsupported(DecodingSettings(num_beams=4, repetition_penalty=1.2))
    assert [n.split(" ")[0] for n in notes] == ["num_beams=4", "repetition_penalty"]
    assert remote.unsupported(DecodingSettings()) == []


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://127.0.0.1/v1", "http:///v1"])
def test_a_base_url_that_is_not_http_is_refused(url):
    with pytest.raises(UserError, match="is not an http"):
        backend(url)


def test_perplexity_from_echoed_prompt_logprobs():
    with FakeOpenAI() as server:
        remote = backend(server.url, mode="completions")
        result = remote.perplexity([("translate: hi", "你好"), ("translate: cat", "猫咪们")])
        body = server.generation_requests()[0]["body"]
    assert body["echo"] is True and body["logprobs"] == 1 and body["max_tokens"] == 1
    # every character of the target is one token of log-probability LOGPROB
    assert result.details["tokens"] == 5
    assert result.score == pytest.approx(math.exp(-LOGPROB))
    assert result.per_example == pytest.approx([math.exp(-LOGPROB)] * 2)
    assert "via:echo-logprobs" in result.signature and "model:fake-model" in result.signature


def test_perplexity_is_unavailable_in_chat_mode_or_without_echo():
    with pytest.raises(LikelihoodUnavailable, match="mode: completions"):
        backend("http://127.0.0.1:1/v1").perplexity([("a", "b")])
    with FakeOpenAI(logprobs=False) as server:
        with pytest.raises(LikelihoodUnavailable, match="refused echo\\+logprobs .*HTTP 400"):
            backend(server.url, mode="completions").perplexity([("a", "b")])
