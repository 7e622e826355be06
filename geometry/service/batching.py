"""Micro-batching: concurrent requests to one backend become one batched call.

Every model call (score model, sentence-transformer) runs on one dedicated worker thread,
so the models are used by one caller at a time and the event loop never blocks. A
:class:`MicroBatcher` sits in front of such a backend function ``fn(items) -> results``:
the first item to arrive opens a window of ``window_s`` seconds; everything that arrives
inside it (up to ``max_items``) goes to ``fn`` as one list. While a batch runs, new
requests queue and form the next batch, so batches grow with load on their own and the
window only matters when the backend is idle. ``max_items = 1`` gives one call per
request (the baseline the benchmark compares against).

Items carry a priority (0 first): a batch holds items of one priority only, and the
lowest number queued opens the next batch. The engine submits the texts of a large embed
request at priority 1, so a one-text query waits for the chunk in progress at most, never
behind the rest of the large request nor inside a batch padded to its long texts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True, frozen=True, kw_only=True)
class BatchConfig:
    """How requests are gathered into batched backend calls."""

    window_ms: float = 2.0
    """How long the first request of a batch waits for company when the backend is idle."""
    max_items: int = 64
    """Requests per batched call at most; 1 disables batching."""
    max_weight: int | None = None
    """Total weight per call at most (e.g. pairs for the score model: a neighbour request
    weighs its candidate count); a heavier single request still goes, alone. On a CPU the
    cost per pair rises again past a few hundred pairs (the B x P x d intermediates leave
    the caches), so unbounded batches would only add latency."""

    def __post_init__(self) -> None:
        if self.window_ms < 0 or self.max_items < 1:
            raise ValueError("window_ms >= 0 and max_items >= 1 required")
        if self.max_weight is not None and self.max_weight < 1:
            raise ValueError("max_weight must be >= 1 when given")


@dataclass(slots=True)
class BatchStats:
    """Counters of one batcher, for /v1/stats and the benchmark."""

    calls: int = 0
    """Batched backend calls made."""
    items: int = 0
    """Requests served."""
    max_batch: int = 0
    busy_s: float = 0.0
    """Seconds spent inside the backend."""
    sizes: Counter = field(default_factory=Counter)
    """Histogram: batch size -> number of calls."""

    def to_dict(self) -> dict:
        return {
            "calls": self.calls,
            "items": self.items,
            "mean_batch": self.items / self.calls if self.calls else 0.0,
            "max_batch": self.max_batch,
            "busy_s": round(self.busy_s, 4),
            "sizes": {str(k): v for k, v in sorted(self.sizes.items())},
        }


class MicroBatcher(Generic[T, R]):
    """Gathers ``submit(item)`` calls into ``fn(list of items) -> list of results`` calls.

    ``fn`` runs on ``executor``; it must return one result per item, in order. If it
    raises, every request of that batch gets the exception: callers validate their
    items first so one bad request cannot fail its neighbours.
    """

    def __init__(self, fn: Callable[[Sequence[T]], Sequence[R]], executor: Executor, config: BatchConfig, *, name: str,
                 weight: Callable[[T], int] | None = None) -> None:
        self.fn = fn
        self.weight = weight or (lambda _: 1)
        self.executor = executor
        self.config = config
        self.name = name
        self.stats = BatchStats()
        # (priority, arrival number, item, future): lowest priority first, FIFO within one.
        self._queue: asyncio.PriorityQueue[tuple[int, int, T, asyncio.Future[R]]] | None = None
        self._seq = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the gathering loop on the running event loop (the app's lifespan calls it)."""
        if self._task is None:
            self._queue = asyncio.PriorityQueue()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def submit(self, item: T, *, priority: int = 0) -> R:
        """The backend's result for ``item``; lower ``priority`` numbers are served first."""
        if self._queue is None:
            raise RuntimeError(f"batcher {self.name} is not started")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._seq += 1
        await self._queue.put((priority, self._seq, item, fut))
        return await fut

    async def _gather(self) -> list[tuple[T, asyncio.Future[R]]]:
        assert self._queue is not None
        first = await self._queue.get()
        batch = [(first[2], first[3])]
        cap = self.config.max_weight
        total = self.weight(first[2])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.window_ms / 1000.0
        while len(batch) < self.config.max_items and (cap is None or total < cap):
            # Whatever queued while the previous batch ran joins at once ...
            if not self._queue.empty():
                nxt = self._queue.get_nowait()
            else:
                # ... and an idle backend waits up to the window for more.
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            w = self.weight(nxt[2])
            if nxt[0] != first[0] or (cap is not None and total + w > cap):
                # Another priority, or over the weight cap: back in the queue (its arrival
                # number keeps its place), to open a later batch.
                self._queue.put_nowait(nxt)
                break
            batch.append((nxt[2], nxt[3]))
            total += w
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(it, f) for it, f in batch if not f.cancelled()]  # clients that went away
            if not live:
                continue
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.fn, [it for it, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batcher {self.name}: backend returned {len(results)} results for {len(live)} items")
            except Exception as e:  # noqa: BLE001 - handed to every waiting request
                log.warning("batcher %s: batch of %d failed: %s", self.name, len(live), e)
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            finally:
                st = self.stats
                st.calls += 1
                st.items += len(live)
                st.max_batch = max(st.max_batch, len(live))
                st.sizes[len(live)] += 1
                st.busy_s += time.perf_counter() - t0
            for (_, f), r in zip(live, results):
                if not f.done():
                    f.set_result(r)
