"""What a server accepts: its options, its API keys, and the bearer-key check.

Keys come from a file (one per line; blank lines and ``#`` comments are skipped) or from the
``LMFORGE_API_KEY`` environment variable (several separated by commas). With keys set, every
``/v1`` route and the runs API answer 401 unless the request carries ``Authorization: Bearer
KEY``; keys are compared in constant time so response timing does not leak them.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import UserError

API_KEY_ENV = "LMFORGE_API_KEY"


@dataclass(frozen=True)
class ServeOptions:
    """Limits and batching of one server (``lmforge serve`` flags of the same names).

    ``max_batch_size`` counts sequences (a request with ``n=4`` is 4; the ``n`` sequences of
    a prompt always run together, so 1 means no batching across requests); ``max_queue`` counts
    prompts waiting for the model; ``max_prompt_tokens`` None takes the length the model was
    fine-tuned with (its card), else 512; ``max_wait_ms`` is how long the first waiting
    request may wait for others to join its batch.
    """

    model_name: str = "model"
    max_batch_size: int = 16
    max_wait_ms: float = 10.0
    max_queue: int = 64
    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int | None = None
    max_tokens_cap: int = 512
    max_n: int = 8
    request_timeout: float = 300.0
    api_keys: tuple[str, ...] = field(default=(), repr=False)

    def check(self) -> None:
        """Raise a UserError naming the first option out of range."""
        positive = {
            "--max-batch-size": self.max_batch_size,
            "--max-queue": self.max_queue,
            "--max-body-bytes": self.max_body_bytes,
            "--max-tokens-cap": self.max_tokens_cap,
            "--max-n": self.max_n,
        }
        for flag, value in positive.items():
            if value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise UserError(f"--max-prompt-tokens must be at least 1, got {self.max_prompt_tokens}")
        if self.max_wait_ms < 0:
            raise UserError(f"--max-wait-ms must be 0 or more, got {self.max_wait_ms}")
        if self.request_timeout <= 0:
            raise UserError(f"--request-timeout must be > 0 seconds, got {self.request_timeout}")
        if not self.model_name.strip():
            raise UserError("--model-name must not be empty")


def load_api_keys(
    path: Path | None = None, environ: dict[str, str] | None = None
) -> tuple[str, ...]:
    """The keys in ``path``, else in ``$LMFORGE_API_KEY``; () when neither is set."""
    environ = dict(os.environ) if environ is None else environ
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"--api-key-file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"--api-key-file {path}: cannot read it ({exc})") from None
        keys = [line.strip() for line in text.splitlines()]
        keys = [k for k in keys if k and not k.startswith("#")]
        if not keys:
            raise UserError(f"--api-key-file {path} holds no key (one key per line)")
        where = f"--api-key-file {path}"
    else:
        raw = environ.get(API_KEY_ENV, "")
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        where = f"${API_KEY_ENV}"
    for number, key in enumerate(keys, start=1):
        if any(c.isspace() for c in key) or not key.isprintable():
            raise UserError(f"{where}: key {number} holds spaces or control characters")
    return tuple(keys)


def key_matches(given: str, keys: tuple[str, ...]) -> bool:
    """Whether ``given`` is one of ``keys``; every key is compared, each in constant time."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given.encode(), key.encode())
    return found
