"""Serving: an OpenAI-compatible HTTP API and a web playground for seq2seq and causal models.

``create_app`` builds the FastAPI app (``lmforge serve`` runs it under uvicorn):

* ``limits``: the server's options, API keys and the checks every request passes;
* ``schemas``: OpenAI's request bodies, response shapes and error object;
* ``prompts``: a completion prompt or a chat conversation -> the token ids the model sees;
* ``scheduler``: the queue and the one worker thread that owns the model;
* ``batch``: one batched ``generate`` call, followed row by row (stop strings, streaming);
* ``metrics``: counters and a latency histogram in Prometheus' text format;
* ``runs``: the run directories the playground's runs view shows;
* ``completions``: the completions and chat handlers, answers and event streams;
* ``app``: the app and its routes; ``static/``: the playground page.
"""

from __future__ import annotations

from lmforge.serve.app import create_app
from lmforge.serve.limits import ServeOptions

__all__ = ["ServeOptions", "create_app"]
