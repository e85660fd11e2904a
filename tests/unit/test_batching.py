"""The micro-batcher on its own: merging, order, error isolation, timeouts, the bounded queue."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.batching import BatchTimeout, MicroBatcher, QueueFull


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


class Recorder:
    """A batch function that doubles every number and remembers the batches it was given."""

    def __init__(self, fail_on: int | None = None, gate: threading.Event | None = None) -> None:
        self.batches: list[list[list[int]]] = []
        self.fail_on = fail_on
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, items: list[list[int]]) -> list[list[int]]:
        self.batches.append(items)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_on is not None and any(self.fail_on in item for item in items):
            raise ValueError(f"cannot take {self.fail_on}")
        return [[2 * n for n in item] for item in items]


def test_concurrent_requests_share_a_batch_and_keep_their_order(
    executor: ThreadPoolExecutor,
) -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, executor=executor, max_batch_size=64, rows_of=len)
    requests = [list(range(i, i + 1 + i % 3)) for i in range(12)]

    async def run() -> list[list[int]]:
        return await asyncio.gather(*(batcher.submit(r, timeout=10) for r in requests))

    results = asyncio.run(run())
    assert results == [[2 * n for n in r] for r in requests]
    assert len(recorder.batches) == 1 and recorder.batches[0] == requests


def test_batches_never_exceed_the_row_limit(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, executor=executor, max_batch_size=4, rows_of=len)
    requests = [[i, i] for i in range(10)]  # 2 rows each: at most 2 requests per batch

    async def run() -> list[list[int]]:
        return await asyncio.gather(*(batcher.submit(r, timeout=10) for r in requests))

    assert asyncio.run(run()) == [[2 * i, 2 * i] for i in range(10)]
    assert [sum(len(item) for item in batch) for batch in recorder.batches] == [4] * 5


def test_batch_size_one_turns_batching_off(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, executor=executor, max_batch_size=1, rows_of=len)

    async def run() -> list[list[int]]:
        return await asyncio.gather(*(batcher.submit([i], timeout=10) for i in range(6)))

    assert asyncio.run(run()) == [[2 * i] for i in range(6)]
    assert recorder.batches == [[[i]] for i in range(6)]


def test_an_error_fails_only_its_own_request(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder(fail_on=13)
    batcher = MicroBatcher(recorder, executor=executor, max_batch_size=64, rows_of=len)
    requests = [[1], [2, 13], [3]]

    async def run() -> list[list[int] | BaseException]:
        return await asyncio.gather(
            *(batcher.submit(r, timeout=10) for r in requests), return_exceptions=True
        )

    first, second, third = asyncio.run(run())
    assert first == [2] and third == [6]
    assert isinstance(second, ValueError) and "13" in str(second)
    # The merged batch failed, then each request ran alone.
    assert recorder.batches == [requests, [[1]], [[2, 13]], [[3]]]


def test_a_request_that_times_out_in_the_queue_is_never_run(
    executor: ThreadPoolExecutor,
) -> None:
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = MicroBatcher(recorder, executor=executor, max_batch_size=1, rows_of=len)

    async def run() -> tuple[list[int], BaseException | None]:
        running = asyncio.create_task(batcher.submit([1], timeout=10))
        await asyncio.to_thread(recorder.started.wait, 10)
        late: BaseException | None = None
        try:
            await batcher.submit([2], timeout=0.05)
        except BatchTimeout as error:
            late = error
        gate.set()
        return await running, late

    first, late = asyncio.run(run())
    assert first == [2]
    assert isinstance(late, BatchTimeout)
    assert recorder.batches == [[[1]]]
    assert batcher.queued_rows == 0


def test_a_full_queue_refuses_with_a_retry_hint(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = MicroBatcher(
        recorder, executor=executor, max_batch_size=1, max_queue_rows=2, rows_of=len
    )

    async def run() -> tuple[list[list[int]], QueueFull | None]:
        tasks = [asyncio.create_task(batcher.submit([1], timeout=10))]
        await asyncio.to_thread(recorder.started.wait, 10)
        # The first request is running; two more fill the queue.
        tasks += [asyncio.create_task(batcher.submit([n], timeout=10)) for n in (2, 3)]
        await asyncio.sleep(0)
        refused: QueueFull | None = None
        try:
            await batcher.submit([4], timeout=10)
        except QueueFull as error:
            refused = error
        gate.set()
        return list(await asyncio.gather(*tasks)), refused

    results, refused = asyncio.run(run())
    assert results == [[2], [4], [6]]
    assert refused is not None
    assert refused.queued_rows == 2 and refused.retry_after_seconds >= 1


def test_a_lone_client_does_not_wait_for_company(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, executor=executor, max_batch_size=32, max_wait_ms=60_000)

    async def one_at_a_time() -> list[list[int]]:
        # Would take minutes if each request waited max_wait for company.
        return [await asyncio.wait_for(batcher.submit([i]), 10) for i in range(3)]

    assert asyncio.run(one_at_a_time()) == [[0], [2], [4]]
    assert recorder.batches == [[[0]], [[1]], [[2]]]


def test_a_batch_runs_as_sorted_chunks_answered_one_by_one(executor: ThreadPoolExecutor) -> None:
    """Chunks are cut from the batch in `sort_key` order (here: the request's first number),
    and a chunk's callers hear back before the next chunk has run."""
    second_chunk = threading.Event()
    answered_before_second_chunk: list[list[int]] = []
    first_answer_came_first: list[bool] = []

    def run_batch(items: list[list[int]]) -> list[list[int]]:
        if len(recorder.batches) == 1:
            # Runs only once the first chunk's caller has its answer (or fails after 5 s).
            first_answer_came_first.append(second_chunk.wait(5))
        return recorder(items)

    recorder = Recorder()
    batcher = MicroBatcher(
        run_batch,
        executor=executor,
        max_batch_size=64,
        rows_of=len,
        chunk_rows=3,
        sort_key=lambda item: item[0],
    )
    requests = [[5], [1, 1], [9], [2], [7, 7], [3]]

    async def run() -> list[list[int]]:
        tasks = [asyncio.create_task(batcher.submit(r, timeout=10)) for r in requests]
        first = await asyncio.wait_for(tasks[1], 10)  # [1, 1] is in the first chunk
        answered_before_second_chunk.append(first)
        second_chunk.set()
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(run()) == [[2 * n for n in r] for r in requests]
    assert answered_before_second_chunk == [[2, 2]]
    assert first_answer_came_first == [True]
    # Sorted by first number, then cut at 3 rows: [1, 1] + [2]; [3] + [5]; [7, 7] + [9].
    assert recorder.batches == [[[1, 1], [2]], [[3], [5]], [[7, 7], [9]]]


def test_the_next_batch_runs_while_the_event_loop_is_busy(executor: ThreadPoolExecutor) -> None:
    """The worker takes batch after batch on the inference thread: a loop busy parsing other
    requests (here: blocked outright) does not leave the model idle between batches."""
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    second_batch = threading.Event()

    def run_batch(items: list[list[int]]) -> list[list[int]]:
        if recorder.batches:
            second_batch.set()
        return recorder(items)

    batcher = MicroBatcher(run_batch, executor=executor, max_batch_size=1, rows_of=len)

    async def run() -> tuple[bool, list[list[int]]]:
        tasks = [asyncio.create_task(batcher.submit([n], timeout=10)) for n in (1, 2)]
        await asyncio.to_thread(recorder.started.wait, 10)
        gate.set()
        # Blocks the event loop itself: only the inference thread can start the second batch.
        ran_meanwhile = second_batch.wait(5)
        return ran_meanwhile, list(await asyncio.gather(*tasks))

    ran_meanwhile, results = asyncio.run(run())
    assert ran_meanwhile
    assert results == [[2], [4]]
