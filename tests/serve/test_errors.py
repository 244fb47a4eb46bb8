"""Every refusal has OpenAI's error object and the documented status: keys, malformed and
oversized bodies, missing fields, bad values, limits, unknown models and routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

KEYS = ("key-one", "key-two")
GOOD = {"Authorization": f"Bearer {KEYS[1]}"}
LIMITS = {
    "max_body_bytes": 2000,
    "max_tokens_cap": 16,
    "max_n": 2,
    "max_prompt_tokens": 20,
    "max_batch_size": 4,
}


@pytest.fixture(scope="module")
def server(serve: Any) -> Iterator[Any]:
    with serve("causal", model_name="tiny", api_keys=KEYS, **LIMITS) as running:
        yield running


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error object, after checking the status and that the shape is OpenAI's."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "tiny", "prompt": "hello", "max_tokens": 2, **fields}


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEYS[0]}"}],
    ids=["none", "wrong", "not-bearer"],
)
def test_every_v1_route_needs_a_key(server, headers) -> None:
    for method, path in [
        ("GET", "/v1/models"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/api/runs"),
    ]:
        response = httpx.request(method, f"{server.url}{path}", headers=headers, json={})
        error = error_of(response, 401)
        assert error["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"


def test_each_configured_key_is_accepted_and_health_and_metrics_need_none(server) -> None:
    for key in KEYS:
        answer = server.client(key).completions.create(model="tiny", prompt="hi", max_tokens=1)
        assert answer.usage.completion_tokens == 1
    assert server.get("/health").json() == {"status": "ok", "model": "tiny", "queue_depth": 0}
    assert server.get("/metrics").status_code == 200


def test_the_openai_client_sees_a_wrong_key_as_an_authentication_error(server) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        server.client("nope").models.list()
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"


# --------------------------------------------------------------------------- bodies


def test_malformed_json_is_a_400(server) -> None:
    response = server.post("/v1/completions", headers=GOOD, content=b'{"model": "tiny",')
    error = error_of(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("the request body is not valid JSON")


def test_a_body_that_is_not_an_object_is_a_400(server) -> None:
    error = error_of(server.post("/v1/chat/completions", [1, 2], headers=GOOD), 400)
    assert error["message"] == "the request body must be a JSON object"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"model": "tiny"}, "prompt"),
        ("/v1/completions", {"prompt": "hi"}, "model"),
        ("/v1/chat/completions", {"model": "tiny"}, "messages"),
        (
            "/v1/chat/completions",
            {"model": "tiny", "messages": [{"role": "user"}]},
            "messages.0.content",
        ),
    ],
)
def test_a_missing_field_is_a_400_naming_it(server, path, body, param) -> None:
    error = error_of(server.post(path, body, headers=GOOD), 400)
    assert error["param"] == param
    assert error["message"] == f"missing required field {param!r}"


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"temperature": 2.5}, "temperature", "less than or equal to 2"),
        ({"top_p": 0}, "top_p", "greater than 0"),
        ({"n": 0}, "n", "greater than or equal to 1"),
        ({"n": "2"}, "n", "valid integer"),
        ({"stream": "yes"}, "stream", "valid boolean"),
        ({"prompt": 5}, "prompt", "expected str or list[str]"),
        ({"n": 3}, "n", "at most 2 (--max-n)"),
        ({"max_tokens": 17}, "max_tokens", "at most 16 (--max-tokens-cap)"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"min_tokens": 5}, "min_tokens", "more than max_tokens 2"),
        ({"echo": True}, "echo", "not supported"),
        ({"logprobs": 2}, "logprobs", "not supported"),
        ({"presence_penalty": 0.5}, "presence_penalty", "not supported"),
        ({"prompt": [100000]}, "prompt", "outside the vocabulary"),
        ({"prompt": []}, "prompt", "the list is empty"),
    ],
)
def test_a_bad_value_is_a_400_naming_the_field(server, fields, param, words) -> None:
    error = error_of(server.post("/v1/completions", completion(**fields), headers=GOOD), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert words in error["message"]


def test_a_bad_chat_message_is_a_400(server) -> None:
    body = {"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]}
    error = error_of(server.post("/v1/chat/completions", body, headers=GOOD), 400)
    assert error["param"] == "messages.0.role"
    body = {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}
    error = error_of(server.post("/v1/chat/completions", body, headers=GOOD), 400)
    assert error["param"] == "messages.0.content"


def test_a_prompt_over_the_limit_is_context_length_exceeded(server) -> None:
    long = " ".join(["window"] * 40)
    error = error_of(server.post("/v1/completions", completion(prompt=long), headers=GOOD), 400)
    assert error["code"] == "context_length_exceeded"
    assert "at most 20 (--max-prompt-tokens)" in error["message"]
    with pytest.raises(openai.BadRequestError):
        server.client(KEYS[0]).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": long}]
        )


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_body_is_a_413(server, chunked) -> None:
    big = b'{"model": "tiny", "prompt": "' + b"x" * 3000 + b'"}'
    content: Any = iter([big[:1000], big[1000:]]) if chunked else big
    response = httpx.post(f"{server.url}/v1/completions", content=content, headers=GOOD, timeout=30)
    error = error_of(response, 413)
    assert error["code"] == "request_too_large" and "2000 bytes" in error["message"]


def test_an_unknown_model_is_a_404(server) -> None:
    error = error_of(server.post("/v1/completions", completion(model="gpt-9"), headers=GOOD), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        server.client(KEYS[0]).models.retrieve("gpt-9")


def test_unknown_routes_and_methods_answer_with_the_error_object(server) -> None:
    error = error_of(server.get("/v1/nothing", headers=GOOD), 404)
    assert error["message"] == "no route GET /v1/nothing"
    error_of(server.get("/v1/completions", headers=GOOD), 405)


def test_errors_are_counted_by_status_in_metrics(server) -> None:
    server.post("/v1/completions", {"model": "tiny"}, headers=GOOD)
    text = server.get("/metrics").text
    assert 'lmforge_requests_total{route="/v1/completions",status="400"}' in text
    assert 'lmforge_requests_total{route="/v1/models",status="401"}' in text
