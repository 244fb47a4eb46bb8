"""The queue in front of the model and the one worker thread that owns it.

Request handlers ``submit`` jobs (one per prompt) and return to the event loop; the worker
takes the oldest waiting job and waits for more to join: until ``max_batch_size`` rows wait,
or none has arrived for ``max_wait`` seconds once as many rows wait as the last batch had,
and never longer than ``max_wait`` or a tenth of the last batch's duration, whichever is
longer (from the later of that job's arrival and the last batch's end); then it
takes the waiting jobs of the same group (same decoding settings), oldest first, each whose
rows still fit ``max_batch_size``, and runs them as one batch
(:func:`lmforge.serve.batch.run_batch`). The others wait for the next batch, whose first job
is then the oldest, so no job waits behind younger ones for ever.

A full queue refuses new jobs (:class:`QueueFull`, answered 429); a cancelled job leaves the
queue at once, or, when already running, has its rows ended at the next decoding step.
``stop`` lets the running batch and every queued job finish before the thread ends.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmforge.serve.batch import Job, run_batch
from lmforge.serve.metrics import ServerMetrics

log = logging.getLogger("lmforge.serve")
WAIT_SHARE = 0.1  # of the last batch's duration: the longest the next one waits to fill


class QueueFull(Exception):
    """The queue has no room; ``retry_after`` estimates the seconds until it has."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class Scheduler:
    """Gathers waiting jobs into batches and runs them on one thread."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        metrics: ServerMetrics,
        *,
        max_batch_size: int,
        max_wait: float,
        max_queue: int,
    ) -> None:
        self.model, self.tokenizer, self.metrics = model, tokenizer, metrics
        self.max_batch_size, self.max_wait, self.max_queue = max_batch_size, max_wait, max_queue
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._batch_seconds = 1.0  # running mean of a batch's duration, for Retry-After
        self._free_since = 0.0  # when the last batch ended,
        self._last_rows = 0  # how many rows it had
        self._last_seconds = 0.0  # and how long it took
        self._thread = threading.Thread(target=self._work, name="lmforge-serve", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the running batch and every queued job, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def depth(self) -> int:
        """Jobs waiting for the model."""
        return len(self._waiting)

    def submit(self, jobs: list[Job]) -> None:
        """Queue ``jobs`` (all or none); QueueFull when they do not fit."""
        with self._cond:
            if self._stopping:
                raise QueueFull(self._retry_after())
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(self._retry_after())
            now = time.monotonic()
            for job in jobs:
                job.enqueued = now
                self._waiting.append(job)
            self.metrics.queue_depth.set(len(self._waiting))
            self._cond.notify_all()

    def cancel(self, jobs: list[Job]) -> None:
        """Drop ``jobs`` from the queue, or end their rows in the running batch."""
        with self._cond:
            for job in jobs:
                if job.cancelled.is_set():
                    continue
                job.cancelled.set()
                try:
                    self._waiting.remove(job)
                except ValueError:
                    pass  # running or finished: the row tracker sees the flag
            self.metrics.queue_depth.set(len(self._waiting))

    def _retry_after(self) -> int:
        """Seconds until the queue has likely drained by one batch."""
        return max(1, math.ceil(self._batch_seconds))

    def _take(self) -> list[Job] | None:
        """The next batch, after the bounded wait; None when stopping with nothing queued."""
        with self._cond:
            while not self._waiting and not self._stopping:
                self._cond.wait()
            if not self._waiting:
                return None
            # The clients a batch just answered send their next requests over the next tens
            # of milliseconds (their answers go out one by one); taking the first few alone
            # would split steady clients into a cohort of small batches and one of large
            # ones. So, after a batch of k rows, the wait goes on until k rows wait, for up
            # to WAIT_SHARE of that batch's duration; the worker idles at most that share.
            # After a quiet spell (nothing came within that time) nobody is expected.
            window = max(self.max_wait, WAIT_SHARE * self._last_seconds)
            start = max(self._waiting[0].enqueued, self._free_since)
            cap = start + window
            recent = self._waiting[0].enqueued <= self._free_since + window
            expected = min(self.max_batch_size, self._last_rows) if recent else 0
            while not self._stopping and self._waiting:
                rows = sum(job.n for job in self._waiting)
                quiet = max(self._waiting[-1].enqueued, start) + self.max_wait
                left = (cap if rows < expected else min(quiet, cap)) - time.monotonic()
                if rows >= self.max_batch_size or left <= 0:
                    break
                self._cond.wait(left)
            if not self._waiting:  # all cancelled while waiting
                return []
            group = self._waiting[0].group
            batch: list[Job] = []
            rows = 0
            for job in list(self._waiting):
                # the first job goes in even when its n alone is more than max_batch_size
                if job.group == group and (not batch or rows + job.n <= self.max_batch_size):
                    batch.append(job)
                    rows += job.n
                    self._waiting.remove(job)
            self.metrics.queue_depth.set(len(self._waiting))
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            start = time.monotonic()
            for job in batch:
                self.metrics.queue_wait.observe(start - job.enqueued)
            rows = sum(job.n for job in batch)
            self.metrics.running.set(rows)
            run_batch(self.model, self.tokenizer, batch, self._count_step)
            self.metrics.running.set(0)
            self.metrics.batches.inc()
            self.metrics.batch_rows.inc(rows)
            self._free_since, self._last_rows = time.monotonic(), rows
            self._last_seconds = self._free_since - start
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * self._last_seconds

    def _count_step(self, tokens: int, live_rows: int) -> None:
        self.metrics.completion_tokens.inc(tokens)
        self.metrics.running.set(live_rows)
