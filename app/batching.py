"""Micro-batching: concurrent requests for one model merged into one forward pass.

A `MicroBatcher` takes requests on the event loop and runs them on an inference thread (an
executor slot). `submit` queues an item and waits for its result. While requests are queued, one
worker runs on the inference thread and, without going back to the event loop, takes a batch of
up to `max_batch_size` rows (waiting at most `max_wait_ms` after the oldest queued request for
company, when the previous batch had any), runs it, hands each caller its own slice back through
the loop, and takes the next batch. While a batch runs, new requests pile up and form the next
batch, so under load batches fill without waiting, and the inference thread never idles waiting
for a busy event loop to schedule its next step: on a 2-core CPU the loop is busy parsing
requests, and a hop back to it between forward passes left the model idle a fifth of the time.

A batch may be run as chunks (`chunk_rows`), its requests ordered by `sort_key` (their token
length) so each chunk pads little. Each chunk's callers are answered as soon as it is done, not
when the whole batch is: with a fixed number of clients each waiting for its answer, answering
early brings their next requests in while the later chunks still run.

If a merged batch raises, each of its requests is run again on its own: one bad request fails
alone instead of failing the strangers it was batched with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger("distillery.serving")

Item = TypeVar("Item")
Result = TypeVar("Result")


class QueueFull(Exception):
    """The batcher already holds `max_queue_rows` rows; the caller should retry later."""

    def __init__(self, queued_rows: int, retry_after_seconds: int) -> None:
        super().__init__(f"{queued_rows} rows are already queued for this model")
        self.queued_rows = queued_rows
        self.retry_after_seconds = retry_after_seconds


class BatchTimeout(Exception):
    """The result did not come within the caller's timeout (the request is dropped if unrun)."""


@dataclass
class _Queued(Generic[Item, Result]):
    item: Item
    rows: int
    future: asyncio.Future[Result]
    queued_at: float = field(default_factory=time.monotonic)


def _run_isolated(
    run_batch: Callable[[list[Item]], list[Result]], items: list[Item]
) -> list[Result | BaseException]:
    """Run all items in one call; if that fails, run each alone so only the bad one fails."""
    try:
        results = run_batch(items)
        if len(results) != len(items):
            raise RuntimeError(f"batch gave {len(results)} results for {len(items)} requests")
        return list(results)
    except Exception as batch_error:
        if len(items) == 1:
            return [batch_error]
    outcomes: list[Result | BaseException] = []
    for item in items:
        try:
            outcomes.extend(run_batch([item]))
        except Exception as error:
            outcomes.append(error)
    return outcomes


class MicroBatcher(Generic[Item, Result]):
    """Merge concurrent `submit` calls into calls of `run_batch(items) -> results` (same order).

    `rows_of(item)` counts the rows an item adds to a batch; `max_batch_size` and
    `max_queue_rows` are in those rows. `max_batch_size=1` turns batching off (one request per
    forward pass), which is the baseline the serving benchmark compares against.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Item]], list[Result]],
        *,
        executor: Executor,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue_rows: int = 1024,
        rows_of: Callable[[Item], int] = lambda item: 1,
        chunk_rows: int | None = None,
        sort_key: Callable[[Item], int] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait_seconds = max(0.0, max_wait_ms) / 1000
        self.max_queue_rows = max(1, max_queue_rows)
        self.rows_of = rows_of
        self.chunk_rows = max(1, chunk_rows) if chunk_rows else self.max_batch_size
        self.sort_key = sort_key
        self.on_batch = on_batch
        # The queue is shared by the event loop (submit) and the worker on the inference
        # thread; `_arrived` wakes a worker that waits for company.
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: deque[_Queued[Item, Result]] = deque()
        self._queued_rows = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._working = False
        self._worker: asyncio.Future[None] | None = None
        # Rows per second of recent batches, for Retry-After.
        self._rows_per_second = 0.0
        self._last_batch_requests = 0

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch (not counting the batch being run)."""
        return self._queued_rows

    async def submit(self, item: Item, timeout: float | None = None) -> Result:
        rows = self.rows_of(item)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        with self._lock:
            if loop is not self._loop:
                # A batcher serves one event loop at a time (a server has one; tests make more).
                self._loop, self._working, self._worker = loop, False, None
                self._queue.clear()
                self._queued_rows = 0
            # An oversized request is still let into an empty queue, or it could never run.
            if self._queued_rows and self._queued_rows + rows > self.max_queue_rows:
                raise QueueFull(self._queued_rows, self._retry_after(self._queued_rows + rows))
            self._queue.append(_Queued(item, rows, future))
            self._queued_rows += rows
            self._arrived.notify()
            if not self._working:
                # Started on the loop's next turn, so requests that arrive together (in the
                # same turn) start out in one batch.
                self._working = True
                loop.call_soon(self._start_worker, loop)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            # Cancelled while still queued means it is skipped, not run for nobody.
            future.cancel()
            raise BatchTimeout(f"no result within {timeout:g} s") from None
        except asyncio.CancelledError:
            future.cancel()
            raise

    def _retry_after(self, rows: int) -> int:
        if self._rows_per_second <= 0:
            return 1
        return max(1, math.ceil(rows / self._rows_per_second))

    def _start_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._worker = loop.run_in_executor(self.executor, self._work, loop)
        except RuntimeError:  # the executor was shut down: nothing will run these
            with self._lock:
                self._working = False
                stranded = list(self._queue)
                self._queue.clear()
                self._queued_rows = 0
            for queued in stranded:
                if not queued.future.done():
                    queued.future.set_exception(RuntimeError("the inference pool is shut down"))

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the inference thread: batches, one after another, until the queue is empty."""
        batch: Sequence[_Queued[Item, Result]] = []
        try:
            while True:
                with self._lock:
                    if loop is not self._loop:
                        return  # the batcher moved to another event loop
                    self._wait_for_company()
                    batch = self._take_batch()
                    if not batch:
                        self._working = False
                        return
                self._last_batch_requests = len(batch)
                if self.on_batch is not None:
                    self.on_batch(sum(q.rows for q in batch))
                for chunk in self._chunks(batch):
                    # A caller may have given up while earlier chunks ran: skip it.
                    chunk = [queued for queued in chunk if not queued.future.done()]
                    if not chunk:
                        continue
                    started = time.monotonic()
                    outcomes = _run_isolated(self.run_batch, [q.item for q in chunk])
                    self._note_rate(sum(q.rows for q in chunk), time.monotonic() - started)
                    _answer_soon(loop, chunk, outcomes)
                batch = []
        except BaseException as error:
            # Not a model error (those are outcomes): a bug or a closing loop. Fail the batch
            # in hand rather than leave its callers waiting, and let a new worker start.
            with self._lock:
                if loop is self._loop:
                    self._working = False
            _answer_soon(loop, list(batch), [error] * len(batch))
            if not isinstance(error, Exception):
                raise
            log.exception("the micro-batch worker failed")

    def _chunks(self, batch: Sequence[_Queued[Item, Result]]) -> list[list[_Queued[Item, Result]]]:
        """The batch in runs of at most `chunk_rows` rows (a bigger request runs alone), in
        `sort_key` order when there is one."""
        if self.sort_key is not None:
            key = self.sort_key
            batch = sorted(batch, key=lambda queued: key(queued.item))
        chunks: list[list[_Queued[Item, Result]]] = []
        rows = 0
        for queued in batch:
            if not chunks or rows + queued.rows > self.chunk_rows:
                chunks.append([])
                rows = 0
            chunks[-1].append(queued)
            rows += queued.rows
        return chunks

    def _note_rate(self, rows: int, elapsed: float) -> None:
        if elapsed > 0:
            rate = rows / elapsed
            self._rows_per_second = (
                rate if self._rows_per_second == 0 else 0.8 * self._rows_per_second + 0.2 * rate
            )

    def _wait_for_company(self) -> None:
        """Wait (holding the lock's condition) until a full batch is queued or the oldest
        request has waited max_wait.

        Only when the last batch had company: a lone client (one request at a time) would
        otherwise pay max_wait on every request for company that never comes."""
        if self._last_batch_requests <= 1:
            return
        while self._queued_rows < self.max_batch_size and self._queue:
            remaining = self._queue[0].queued_at + self.max_wait_seconds - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.wait(remaining)

    def _take_batch(self) -> Sequence[_Queued[Item, Result]]:
        batch: list[_Queued[Item, Result]] = []
        batch_rows = 0
        while self._queue:
            queued = self._queue[0]
            if batch and batch_rows + queued.rows > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_rows -= queued.rows
            if queued.future.done():  # the caller gave up (timeout or disconnect)
                continue
            batch.append(queued)
            batch_rows += queued.rows
        return batch


def _answer_soon(
    loop: asyncio.AbstractEventLoop,
    chunk: Sequence[_Queued[Item, Result]],
    outcomes: Sequence[Result | BaseException],
) -> None:
    """Hand a chunk's outcomes to its callers, on their event loop (futures are not
    thread-safe)."""

    def answer() -> None:
        for queued, outcome in zip(chunk, outcomes, strict=True):
            if queued.future.done():
                continue
            if isinstance(outcome, BaseException):
                queued.future.set_exception(outcome)
            else:
                queued.future.set_result(outcome)

    if chunk:
        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(answer)
