"""Server metrics in Prometheus' text exposition format (``GET /metrics``).

Written by hand, in the few lines the text format needs, because prometheus_client is not
among lmforge's dependencies; the names and shapes follow its conventions (``_total``
counters, cumulative ``_bucket{le=...}`` histograms with ``_sum`` and ``_count``), so a
Prometheus server scrapes them as it would the official client's.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels] + ([extra] if extra else [])
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str) -> None:
        self.name, self.help = name, help
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A number that only goes up, per label set."""

    kind = "counter"

    def __init__(self, name: str, help: str) -> None:
        super().__init__(name, help)
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self.values[key] = self.values.get(key, 0) + amount

    def value(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0)

    def lines(self) -> Iterator[str]:
        values = self.values or {(): 0}
        for key, value in sorted(values.items()):
            yield f"{self.name}{_labels(key)} {_number(value)}"


class Gauge(_Metric):
    """A number that goes up and down."""

    kind = "gauge"

    def __init__(self, name: str, help: str) -> None:
        super().__init__(name, help)
        self.current = 0.0

    def set(self, value: float) -> None:
        self.current = value

    def lines(self) -> Iterator[str]:
        yield f"{self.name} {_number(self.current)}"


class Histogram(_Metric):
    """Observations counted in cumulative buckets, per label set."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help)
        self.buckets = (*buckets, math.inf)
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts, total = self.series.setdefault(key, ([0] * len(self.buckets), [0.0]))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            total[0] += value

    def count(self, **labels: str) -> int:
        series = self.series.get(tuple(sorted(labels.items())))
        return series[0][-1] if series else 0

    def lines(self) -> Iterator[str]:
        for key, (counts, total) in sorted(self.series.items()):
            for bound, count in zip(self.buckets, counts, strict=True):
                le = 'le="' + _number(bound) + '"'
                yield f"{self.name}_bucket{_labels(key, le)} {count}"
            yield f"{self.name}_sum{_labels(key)} {_number(total[0])}"
            yield f"{self.name}_count{_labels(key)} {counts[-1]}"


class ServerMetrics:
    """Everything ``GET /metrics`` reports for one server."""

    def __init__(self) -> None:
        self.requests = Counter(
            "lmforge_requests_total", "HTTP requests to /v1 routes by route and status code."
        )
        self.latency = Histogram(
            "lmforge_request_duration_seconds",
            "Time from a /v1 request's arrival to the last byte of its response, by route.",
        )
        self.prompt_tokens = Counter(
            "lmforge_prompt_tokens_total", "Prompt tokens of the requests accepted."
        )
        self.completion_tokens = Counter(
            "lmforge_completion_tokens_total", "Tokens generated (cancelled requests' included)."
        )
        self.queue_depth = Gauge("lmforge_queue_depth", "Prompts waiting for the model.")
        self.running = Gauge("lmforge_running_sequences", "Sequences being generated now.")
        self.queue_wait = Histogram(
            "lmforge_queue_wait_seconds", "Time a prompt waited before its batch started."
        )
        self.batches = Counter("lmforge_batches_total", "Batched generate calls run.")
        self.batch_rows = Counter(
            "lmforge_batch_sequences_total", "Sequences generated in those batches."
        )
        self.cancelled = Counter(
            "lmforge_requests_cancelled_total",
            "Requests ended early: the client disconnected or the request timed out.",
        )

    def render(self) -> str:
        metrics = [
            self.requests,
            self.latency,
            self.prompt_tokens,
            self.completion_tokens,
            self.queue_depth,
            self.running,
            self.queue_wait,
            self.batches,
            self.batch_rows,
            self.cancelled,
        ]
        lines = [line for m in metrics for line in (*m.header(), *m.lines())]
        return "\n".join(lines) + "\n"
