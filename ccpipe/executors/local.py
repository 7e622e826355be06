"""Worker processes on one machine.

Built on ``concurrent.futures.ProcessPoolExecutor`` because it notices a worker
that dies (killed, out of memory): every task in flight is then resubmitted to a
fresh pool, up to ``max_retries`` times per task, while finished tasks stand.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence

from ccpipe.config import ExecutorConfig
from ccpipe.executors.base import Executor, Progress, TaskFailed, describe, items_with_weights

log = logging.getLogger(__name__)


class LocalExecutor(Executor):
    def __init__(self, cfg: ExecutorConfig):
        self.cfg = cfg
        self.workers = cfg.n_workers

    def _pool(self, n: int) -> ProcessPoolExecutor:
        # forkserver: workers start from a clean, thread-free process (safe with
        # pyarrow/torch threads in the driver) and still start fast
        return ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("forkserver"))

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        *,
        desc: str,
        weights: Sequence[float] | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        pending = items_with_weights(items, weights)
        if not pending:
            return
        progress = Progress(desc, [w for _, w in pending], self.cfg.progress)
        attempts: dict[int, int] = {}
        try:
            while pending:
                n = min(self.workers, len(pending))
                pool = self._pool(n)
                futures: dict[Future, tuple[Any, float]] = {}
                todo = list(pending)
                pending = []
                try:
                    # never more than 2 tasks per worker queued, so a broken pool
                    # loses little and memory stays flat
                    while todo or futures:
                        while todo and len(futures) < 2 * n:
                            item, w = todo.pop(0)
                            futures[pool.submit(fn, item)] = (item, w)
                        done, _ = wait(futures, return_when=FIRST_COMPLETED)
                        for fut in done:
                            item, w = futures.pop(fut)
                            try:
                                result = fut.result()
                            except BrokenProcessPool:
                                futures[fut] = (item, w)  # retried with the others below
                                raise
                            except Exception as e:  # noqa: BLE001 - retried, then raised
                                self._retry_or_raise(item, w, e, attempts, pending)
                                continue
                            progress.update(w, result)
                            yield item, result
                except BrokenProcessPool as e:
                    log.warning("a worker process died (%s); retrying its tasks in a new pool", e)
                    for fut, (item, w) in futures.items():
                        self._retry_or_raise(item, w, e, attempts, pending)
                    pending.extend(todo)
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
        finally:
            progress.close()

    def _retry_or_raise(self, item: Any, w: float, err: BaseException, attempts: dict[int, int], pending: list) -> None:
        key = id(item)
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] > self.cfg.max_retries:
            raise TaskFailed(f"{describe(item)} failed {attempts[key]} times; last error: {err!r}") from err
        delay = min(30.0, 0.5 * 2 ** (attempts[key] - 1))
        log.warning("%s failed (%r); retry %d/%d in %.1fs", describe(item), err, attempts[key], self.cfg.max_retries, delay)
        time.sleep(delay)
        pending.append((item, w))
