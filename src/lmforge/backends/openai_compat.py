"""A model behind an OpenAI-compatible HTTP API: OpenAI, Gemini's OpenAI-compatible endpoint,
vLLM, Ollama, ``lmforge serve``.

Requests go through the official ``openai`` client rather than hand-written httpx calls: it
already retries 408/409/429/5xx and dropped connections with exponential backoff and jitter
(0.5 s doubling to 8 s, minus up to 25%), honours ``Retry-After`` / ``retry-after-ms``, and
maps each HTTP failure to a typed exception, and every endpoint above is tested against it.
On top of it this module adds what evaluation needs: at most ``max_concurrency`` requests in
flight (a thread pool), a reachability check before the first request so a wrong URL fails
at once instead of after every retry, and one-line :class:`~lmforge.errors.UserError`\\ s.

The API key is read from the environment variable the config names (``api_key_env``), kept
in memory only, and scrubbed from every error message; configs and outputs hold the
variable's name, never its value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from lmforge import __version__
from lmforge.backends import LikelihoodUnavailable, TokenUsage
from lmforge.errors import UserError
from lmforge.generation import DecodingSettings
from lmforge.humaneval import truncate_at_stop
from lmforge.metrics import MetricResult

Mode = Literal["chat", "completions"]
MODES: tuple[str, ...] = ("chat", "completions")
# The OpenAI API accepts at most 4 stop sequences; more are cut client-side (every stop
# sequence is applied to the returned text anyway).
MAX_STOP_SEQUENCES = 4
# The key sent when no key is configured: the openai client refuses to start without one,
# and vLLM's and Ollama's documentation use a placeholder the same way.
NO_KEY = "EMPTY"
PREFLIGHT_TIMEOUT = 10.0
T = TypeVar("T")


def _openai() -> Any:
    try:
        import openai
    except ImportError as exc:
        raise UserError(
            "remote models need the openai package", hint="pip install 'lmforge[eval]'"
        ) from exc
    return openai


class OpenAICompatBackend:
    """Generate with ``model`` at ``base_url`` (e.g. ``http://localhost:8000/v1``).

    ``mode`` picks ``/v1/chat/completions`` (the source is one user message) or
    ``/v1/completions`` (the source is the prompt: base models, HumanEval). ``max_retries``
    counts retries after the first attempt; ``timeout`` is per request, in seconds.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        name: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        mode: Mode = "chat",
        max_concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UserError(
                f"base_url {base_url!r} is not an http(s) URL; expected e.g. "
                "http://localhost:8000/v1 or https://api.openai.com/v1"
            )
        if mode not in MODES:
            raise UserError(f"mode {mode!r} is not one of: {', '.join(MODES)}")
        if max_concurrency < 1:
            raise UserError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if max_retries < 0:
            raise UserError(f"max_retries must be 0 or more, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = name or model
        self.mode: Mode = mode
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.usage = TokenUsage()
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        self._client: Any = None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatBackend({self.base_url!r}, {self.model!r}, mode={self.mode!r})"

    # ------------------------------------------------------------------ connection

    def connect(self) -> Any:
        """Check that something answers at ``base_url`` (one request, no retries; any HTTP
        status will do) and return the client. Called before the first request."""
        if self._client is not None:
            return self._client
        openai = _openai()
        client = openai.OpenAI(
            base_url=self.base_url,
            api_key=self._api_key or NO_KEY,
            max_retries=self.max_retries,
            timeout=self.timeout,
        )
        try:
            client.with_options(
                max_retries=0, timeout=min(self.timeout, PREFLIGHT_TIMEOUT)
            ).models.list()
        except openai.APIStatusError:
            pass  # it answered: not every server lists its models
        except openai.APIConnectionError as exc:
            client.close()
            raise UserError(
                f"model {self.name}: cannot reach {self.base_url} ({self._reason(exc)}); "
                "check base_url and that the server is running"
            ) from None
        self._client = client
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _reason(self, exc: BaseException) -> str:
        cause = exc.__cause__ or exc.__context__
        text = str(cause or exc).strip().splitlines()
        return self._scrub(text[0] if text else type(exc).__name__)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _key_hint(self) -> str:
        if self.api_key_env is None:
            return "set api_key_env to the variable that holds the key"
        if self._api_key is None:
            return f"set the API key in ${self.api_key_env}"
        return f"check the key in ${self.api_key_env} (api_key_env)"

    def _call(self, request: Callable[[Any], T], *, scoring: bool = False) -> T:
        """Run one API call; the client's retries are spent by the time anything raises.
        With ``scoring``, a request the endpoint refuses (HTTP 400/404/422...) means it cannot
        score likelihoods: :class:`LikelihoodUnavailable`."""
        openai = _openai()
        client = self.connect()
        tries = f"after {self.max_retries} retries" if self.max_retries else "with retries off"
        try:
            return request(client)
        except openai.APIStatusError as exc:
            message = self._scrub(_error_message(exc))
            hint = self._key_hint() if exc.status_code in (401, 403) else None
            if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
                message += f" ({tries})"
            elif scoring and hint is None:
                raise LikelihoodUnavailable(
                    f"model {self.name}: {self.base_url} refused echo+logprobs on "
                    f"/v1/completions (HTTP {exc.status_code}: {message})"
                ) from None
            raise UserError(
                f"model {self.name}: {self.base_url} answered HTTP {exc.status_code}: {message}",
                hint=hint,
            ) from None
        except openai.APIConnectionError as exc:
            raise UserError(
                f"model {self.name}: lost {self.base_url} ({self._reason(exc)}) {tries}"
            ) from None

    def _pooled(self, work: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``work`` on each item with at most ``max_concurrency`` in flight, results in order;
        on the first failure the queued items are cancelled."""
        self.connect()
        with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="lmforge-api") as pool:
            futures: list[Future[T]] = [pool.submit(work, item) for item in items]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    # ------------------------------------------------------------------ generation

    def unsupported(self, settings: DecodingSettings) -> list[str]:
        """Settings the OpenAI API has no parameter for; they are not sent."""
        notes = []
        if settings.num_beams > 1:
            notes.append(f"num_beams={settings.num_beams} is ignored (the API has no beam search)")
        if settings.repetition_penalty != 1.0:
            notes.append("repetition_penalty is ignored (the API has no such parameter)")
        for name in ("min_new_tokens", "no_repeat_ngram_size"):
            if getattr(settings, name):
                notes.append(f"{name} is ignored (the API has no such parameter)")
        return notes

    def _parameters(self, settings: DecodingSettings, stop: Sequence[str]) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature if settings.do_sample else 0.0,
        }
        if settings.do_sample and settings.top_p < 1.0:
            params["top_p"] = settings.top_p
        if stop:
            params["stop"] = list(stop)[:MAX_STOP_SEQUENCES]
        return params

    def _texts(self, source: str, params: dict[str, Any]) -> list[str]:
        if self.mode == "chat":
            messages = [{"role": "user", "content": source}]
            response = self._call(lambda c: c.chat.completions.create(messages=messages, **params))
            texts = [choice.message.content or "" for choice in _ordered(response.choices)]
        else:
            response = self._call(lambda c: c.completions.create(prompt=source, **params))
            texts = [choice.text or "" for choice in _ordered(response.choices)]
        if response.usage is not None:
            self.usage.add(response.usage.prompt_tokens, response.usage.completion_tokens or 0)
        if not texts:
            raise UserError(f"model {self.name}: {self.base_url} returned no choices")
        return texts

    def _samples(
        self, source: str, settings: DecodingSettings, n: int, stop: Sequence[str]
    ) -> list[str]:
        texts: list[str] = []
        while len(texts) < n:  # some servers (Ollama) ignore n and return one choice
            params = self._parameters(settings, stop)
            if n - len(texts) > 1:
                params["n"] = n - len(texts)
            if settings.seed is not None:
                params["seed"] = settings.seed + len(texts)
            texts += self._texts(source, params)[: n - len(texts)]
        return [truncate_at_stop(text, stop) for text in texts]

    def generate(
        self,
        sources: list[str],
        settings: DecodingSettings,
        n: int = 1,
        *,
        stop: Sequence[str] = (),
        raw: bool = False,
    ) -> list[list[str]]:
        """``n`` texts per source; sources are sent as they are whatever ``raw`` says."""
        settings.check()
        if n < 1:
            raise UserError(f"samples per source must be at least 1, got {n}")
        stops = [*settings.stop, *stop]
        return self._pooled(lambda source: self._samples(source, settings, n, stops), sources)

    # ------------------------------------------------------------------ likelihood

    def _scored_tokens(self, pair: tuple[str, str]) -> tuple[float, int]:
        """Sum of the log-probabilities of the continuation's tokens, and how many there are
        (as lm-evaluation-harness asks: echo the prompt with logprobs, generate 1 token)."""
        context, continuation = pair
        prompt = context + continuation
        response = self._call(
            lambda c: c.completions.create(
                model=self.model, prompt=prompt, echo=True, logprobs=1, max_tokens=1, temperature=0
            ),
            scoring=True,
        )
        logprobs = response.choices[0].logprobs if response.choices else None
        offsets = getattr(logprobs, "text_offset", None)
        values = getattr(logprobs, "token_logprobs", None)
        if not offsets or not values:
            raise LikelihoodUnavailable(
                f"model {self.name}: the endpoint returned no prompt log-probabilities "
                "(it needs echo with logprobs on /v1/completions)"
            )
        total, count = 0.0, 0
        for offset, value in zip(offsets, values, strict=False):
            if len(context) <= offset < len(prompt) and value is not None:
                total, count = total + value, count + 1
        if count == 0:
            raise LikelihoodUnavailable(
                f"model {self.name}: no prompt log-probabilities came back for the scored text"
            )
        return total, count

    def perplexity(self, texts_or_pairs: Sequence[str] | Sequence[Sequence[str]]) -> MetricResult:
        """Perplexity from the endpoint's prompt log-probabilities: texts whole, pairs as the
        target after ``source + "\\n"``. Tokens are the remote model's own, so the number is
        comparable only with the same model's."""
        if self.mode != "completions":
            raise LikelihoodUnavailable(
                f"model {self.name}: /v1/chat/completions returns no log-probabilities of "
                "given text; perplexity needs mode: completions on an endpoint that offers "
                "echo with logprobs"
            )
        if not texts_or_pairs:
            raise UserError("perplexity needs a non-empty list of texts or (source, target) pairs")
        texts = isinstance(texts_or_pairs[0], str)
        pairs = [("", t) if texts else (f"{t[0]}\n", t[1]) for t in texts_or_pairs]
        scored = self._pooled(self._scored_tokens, pairs)
        tokens = sum(count for _, count in scored)
        nll = -math.fsum(total for total, _ in scored) / tokens
        given = "none" if texts else "source+newline"
        return MetricResult(
            name="perplexity",
            score=math.exp(nll),
            signature=(
                f"perplexity|kind:remote|model:{self.model}|scored:{'text' if texts else 'target'}"
                f"|given:{given}|via:echo-logprobs|tokens:{tokens}|agg:token-mean"
                f"|version:lmforge-{__version__}"
            ),
            details={"nll": nll, "tokens": tokens, "examples": len(pairs), "truncated": 0},
            per_example=[math.exp(-total / count) for total, count in scored],
        )


def _ordered(choices: Sequence[Any]) -> list[Any]:
    return sorted(choices, key=lambda choice: choice.index or 0)


def _error_message(exc: Any) -> str:
    """The server's own error message (OpenAI's ``{"error": {"message": ...}}`` shape, or
    the body's first line)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message).strip().splitlines()[0]
    text = str(getattr(exc, "message", "") or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
