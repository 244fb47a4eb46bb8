"""The Prometheus text: counters by label, cumulative histogram buckets, escaped labels."""

from __future__ import annotations

from lmforge.serve.metrics import Counter, Histogram, ServerMetrics


def test_counters_render_one_line_per_label_set() -> None:
    counter = Counter("x_total", "Things.")
    assert list(counter.lines()) == ["x_total 0"]  # scraped before anything happened
    counter.inc(route="/a", status="200")
    counter.inc(2, route="/a", status="200")
    counter.inc(route='/"b"\n', status="500")
    assert counter.value(route="/a", status="200") == 3
    assert list(counter.lines()) == [
        'x_total{route="/\\"b\\"\\n",status="500"} 1',
        'x_total{route="/a",status="200"} 3',
    ]


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    histogram = Histogram("t_seconds", "Time.", buckets=(0.1, 1.0))
    for value in (0.05, 0.5, 0.7, 3.0):
        histogram.observe(value, route="/a")
    assert list(histogram.lines()) == [
        't_seconds_bucket{route="/a",le="0.1"} 1',
        't_seconds_bucket{route="/a",le="1"} 3',
        't_seconds_bucket{route="/a",le="+Inf"} 4',
        't_seconds_sum{route="/a"} 4.25',
        't_seconds_count{route="/a"} 4',
    ]
    assert histogram.count(route="/a") == 4 and histogram.count(route="/b") == 0


def test_the_server_page_has_help_and_type_for_every_metric() -> None:
    metrics = ServerMetrics()
    metrics.queue_depth.set(3)
    text = metrics.render()
    assert text.endswith("\n")
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names == [
        "lmforge_requests_total",
        "lmforge_request_duration_seconds",
        "lmforge_prompt_tokens_total",
        "lmforge_completion_tokens_total",
        "lmforge_queue_depth",
        "lmforge_running_sequences",
        "lmforge_queue_wait_seconds",
        "lmforge_batches_total",
        "lmforge_batch_sequences_total",
        "lmforge_requests_cancelled_total",
    ]
    assert "lmforge_queue_depth 3\n" in text
    assert "# TYPE lmforge_request_duration_seconds histogram" in text
