"""OpenAI's wire format: request bodies, response and stream-chunk shapes, the error object.

Requests are validated by pydantic in strict mode (``"n": "2"`` is an error, as at OpenAI);
fields lmforge does not know are tolerated, as OpenAI tolerates them. Fields that would change
what a client gets back and that lmforge cannot honour (``logprobs``, ``echo``, ``suffix``,
``best_of``, penalties, tools) are refused with a 400 naming the field, rather than ignored.
Two extra fields are vLLM's: ``min_tokens`` and ``top_k``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lmforge import __version__
from lmforge.generation import Generation

SYSTEM_FINGERPRINT = f"lmforge-{__version__}"


class APIError(Exception):
    """An error answered with OpenAI's error object and ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


# --------------------------------------------------------------------------- requests


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(_Body):
    include_usage: bool = False


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _Generate(_Body):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    min_tokens: int = Field(0, ge=0)  # vLLM's: no end of sequence before this many tokens
    top_k: int = Field(0, ge=0)  # vLLM's: sample from the k likeliest tokens (0: all)
    logprobs: Any = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def refused(self) -> list[tuple[str, bool]]:
        """(field, set to something lmforge cannot honour) for the fields checked."""
        return [
            ("logprobs", self.logprobs not in (None, False, 0)),
            ("presence_penalty", bool(self.presence_penalty)),
            ("frequency_penalty", bool(self.frequency_penalty)),
        ]


class CompletionRequest(_Generate):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None

    def refused(self) -> list[tuple[str, bool]]:
        best_of = self.best_of is not None and self.best_of != (self.n or 1)
        return [
            *super().refused(),
            ("echo", bool(self.echo)),
            ("suffix", bool(self.suffix)),
            ("best_of", best_of),
        ]


class ChatCompletionRequest(_Generate):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Any] | None = None

    def refused(self) -> list[tuple[str, bool]]:
        return [*super().refused(), ("tools", bool(self.tools))]


def parse_request(model: type[_Generate], raw: bytes) -> Any:
    """Validate a request body; the first problem becomes a 400 naming its field."""
    try:
        request = model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise _bad_request(exc.errors(include_url=False)) from None
    for name, bad in request.refused():
        if bad:
            raise APIError(400, f"{name} is not supported by lmforge serve", param=name)
    return request


_TYPE_TAGS = {"str", "int", "float", "bool"}


def _split_loc(loc: tuple[Any, ...]) -> tuple[str, str | None]:
    """(field path, the union member tried) of a pydantic error location: for a union field
    pydantic puts the member type (``str``, ``list[int]``) into the location."""
    path: list[str] = []
    for part in loc:
        if isinstance(part, str) and (part in _TYPE_TAGS or "[" in part):
            return ".".join(path), part
        path.append(str(part))
    return ".".join(path), None


def _bad_request(errors: list[Any]) -> APIError:
    """The 400 for the first validation problem, with the field as ``param``."""
    first = errors[0]
    if first["type"] == "json_invalid":
        return APIError(400, f"the request body is not valid JSON: {first['msg']}")
    if first["type"] == "model_type" and not first["loc"]:
        return APIError(400, "the request body must be a JSON object")
    param, member = _split_loc(first["loc"])
    if first["type"] == "missing":
        return APIError(400, f"missing required field {param!r}", param=param)
    if member is not None:  # a union: say which shapes would do
        shapes: list[str] = []
        for error in errors:
            where, tried = _split_loc(error["loc"])
            if where == param and tried is not None and tried not in shapes:
                shapes.append(tried)
        return APIError(400, f"{param}: expected {' or '.join(shapes)}", param=param)
    message = first["msg"]
    return APIError(400, f"{param}: {message}" if param else message, param=param or None)


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def body(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def new_id(kind: Literal["completion", "chat"]) -> str:
    return ("cmpl-" if kind == "completion" else "chatcmpl-") + uuid.uuid4().hex


def _envelope(id: str, object: str, model: str, created: int) -> dict[str, Any]:
    return {
        "id": id,
        "object": object,
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def completion_body(
    id: str, model: str, choices: list[Generation], usage: Usage, created: int | None = None
) -> dict[str, Any]:
    return {
        **_envelope(id, "text_completion", model, created or int(time.time())),
        "choices": [
            {"index": i, "text": g.text, "logprobs": None, "finish_reason": g.finish_reason}
            for i, g in enumerate(choices)
        ],
        "usage": usage.body(),
    }


def chat_body(
    id: str, model: str, choices: list[Generation], usage: Usage, created: int | None = None
) -> dict[str, Any]:
    return {
        **_envelope(id, "chat.completion", model, created or int(time.time())),
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": g.text, "refusal": None},
                "logprobs": None,
                "finish_reason": g.finish_reason,
            }
            for i, g in enumerate(choices)
        ],
        "usage": usage.body(),
    }


@dataclass(frozen=True)
class ChunkMaker:
    """The stream chunks of one response: all share its id, created time and model."""

    kind: Literal["completion", "chat"]
    id: str
    model: str
    created: int
    include_usage: bool

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        object = "text_completion" if self.kind == "completion" else "chat.completion.chunk"
        chunk = {**_envelope(self.id, object, self.model, self.created), "choices": choices}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def start(self, index: int) -> dict[str, Any] | None:
        """Chat's first chunk of a choice names the role; completions have none."""
        if self.kind == "completion":
            return None
        return self._chunk(
            [
                {
                    "index": index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )

    def piece(self, index: int, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        if self.kind == "completion":
            choice = {"index": index, "text": text, "logprobs": None}
        else:
            choice = {"index": index, "delta": {"content": text} if text else {}, "logprobs": None}
        return self._chunk([{**choice, "finish_reason": finish_reason}])

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {**self._chunk([]), "usage": usage.body()}


def models_body(model_name: str, created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "lmforge"}],
    }
