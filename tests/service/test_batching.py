"""MicroBatcher on its own: deterministic backends, no model."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from geometry.service.batching import BatchConfig, MicroBatcher


def run_batcher(n: int, config: BatchConfig, fn) -> tuple[list, list[list[int]], MicroBatcher]:
    calls: list[list[int]] = []

    def backend(items):
        calls.append(list(items))
        return fn(items)

    async def main():
        with ThreadPoolExecutor(1) as ex:
            b = MicroBatcher(backend, ex, config, name="t")
            b.start()
            res = await asyncio.gather(*(b.submit(i) for i in range(n)), return_exceptions=True)
            await b.stop()
            return res, b

    res, b = asyncio.run(main())
    return res, calls, b


def test_concurrent_items_share_one_call() -> None:
    res, calls, b = run_batcher(10, BatchConfig(window_ms=200, max_items=64), lambda xs: [x * x for x in xs])
    assert res == [i * i for i in range(10)]
    assert calls == [list(range(10))]
    assert b.stats.calls == 1 and b.stats.items == 10 and b.stats.max_batch == 10


def test_max_items_caps_a_batch_and_one_disables_batching() -> None:
    res, calls, _ = run_batcher(10, BatchConfig(window_ms=200, max_items=4), lambda xs: [-x for x in xs])
    assert res == [-i for i in range(10)]
    assert [len(c) for c in calls] == [4, 4, 2]
    _, calls, b = run_batcher(5, BatchConfig(window_ms=200, max_items=1), lambda xs: list(xs))
    assert calls == [[0], [1], [2], [3], [4]] and b.stats.to_dict()["mean_batch"] == 1.0


def test_max_weight_caps_the_pairs_per_call() -> None:
    """Weights 1..6 with a cap of 6: an item that does not fit opens the next batch, in order."""
    calls: list[list[int]] = []

    def backend(xs):
        calls.append(list(xs))
        return list(xs)

    async def main():
        with ThreadPoolExecutor(1) as ex:
            b = MicroBatcher(backend, ex, BatchConfig(window_ms=200, max_items=64, max_weight=6), name="t", weight=lambda x: x)
            b.start()
            out = await asyncio.gather(*(b.submit(i) for i in (1, 2, 3, 4, 9, 1)))
            await b.stop()
            return out

    assert asyncio.run(main()) == [1, 2, 3, 4, 9, 1]
    assert calls == [[1, 2, 3], [4], [9], [1]]


def test_a_failing_batch_fails_its_requests_only() -> None:
    def backend(xs):
        if 3 in xs:
            raise ValueError("bad item 3")
        return list(xs)

    res, calls, _ = run_batcher(6, BatchConfig(window_ms=100, max_items=2), backend)
    assert [len(c) for c in calls] == [2, 2, 2]
    assert res[0:2] == [0, 1] and res[4:6] == [4, 5]
    assert all(isinstance(r, ValueError) and "bad item 3" in str(r) for r in res[2:4])


def test_wrong_result_count_is_an_error_not_a_silent_mismatch() -> None:
    res, _, _ = run_batcher(3, BatchConfig(window_ms=100, max_items=8), lambda xs: list(xs)[:-1])
    assert all(isinstance(r, RuntimeError) for r in res)


def behind_a_busy_backend(first: tuple[object, int], queued: list[tuple[object, int]]) -> tuple[list, list[list]]:
    """Window 0. ``first`` (item, priority) enters the backend and holds it; meanwhile the
    ``queued`` items are submitted; then the backend is released. Returns every result (in
    submission order) and the batches the backend saw."""
    entered, gate = threading.Event(), threading.Event()
    calls: list[list] = []

    def backend(xs):
        calls.append(list(xs))
        entered.set()
        gate.wait(5)
        return list(xs)

    async def main():
        with ThreadPoolExecutor(1) as ex:
            b = MicroBatcher(backend, ex, BatchConfig(window_ms=0, max_items=64), name="t")
            b.start()
            head = asyncio.ensure_future(b.submit(first[0], priority=first[1]))
            assert await asyncio.to_thread(entered.wait, 5)  # the first item is inside the backend
            rest = [asyncio.ensure_future(b.submit(x, priority=p)) for x, p in queued]
            await asyncio.sleep(0.05)  # let them reach the queue
            gate.set()
            out = await asyncio.gather(head, *rest)
            await b.stop()
            return out

    return asyncio.run(main()), calls


def test_items_queued_while_the_backend_runs_form_the_next_batch() -> None:
    """Window 0: batching comes only from load, i.e. from requests queued behind a busy backend."""
    out, calls = behind_a_busy_backend((0, 0), [(i, 0) for i in range(1, 8)])
    assert out == list(range(8))
    assert calls == [[0], list(range(1, 8))]


def test_lower_priority_numbers_go_first_in_batches_of_their_own() -> None:
    """What a large embed request does (priority 1) against a text query (priority 0): the
    query queued behind it goes next, alone, not batched with the large request's items."""
    out, calls = behind_a_busy_backend(("big0", 1), [("big1", 1), ("big2", 1), ("query", 0)])
    assert out == ["big0", "big1", "big2", "query"]
    assert calls == [["big0"], ["query"], ["big1", "big2"]]


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        BatchConfig(max_items=0)
    with pytest.raises(ValueError):
        BatchConfig(window_ms=-1)
