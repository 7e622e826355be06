"""Worker processes on one machine.

Built on ``concurrent.futures.ProcessPoolExecutor`` because it notices a worker
that dies (killed, out of memory): every task in flight is then resubmitted to a
fresh pool, up to ``max_retries`` times per task, while finished tasks stand.

One pool serves every phase of a run (``map`` after ``map``): a worker imports
the pipeline's modules (~0.5 CPU-second) and loads its models once per run, not
once per phase. A pool is replaced only when a worker died, or when a ``map`` was
abandoned with tasks still running.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence

from ccpipe import lifeline
from ccpipe.config import ExecutorConfig
from ccpipe.executors.base import Executor, Progress, TaskFailed, describe, items_with_weights, retryable

log = logging.getLogger(__name__)


class LocalExecutor(Executor):
    def __init__(self, cfg: ExecutorConfig):
        self.cfg = cfg
        self.workers = cfg.n_workers
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self, n: int) -> ProcessPoolExecutor:
        _start_forkserver_deaf_to_ctrl_c()
        # forkserver: workers start from a clean, thread-free process (safe with
        # pyarrow/torch threads in the driver) and still start fast; each worker
        # dies with the driver, even a SIGKILLed one (ccpipe.lifeline)
        return ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("forkserver"),
                                   initializer=lifeline.worker_init, initargs=(os.getpid(),))

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
        n = self.workers
        try:
            while pending:
                if self._pool is None:
                    self._pool = self._new_pool(n)  # workers start on demand, up to n
                pool = self._pool
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
                    self._drop_pool()
                    for fut, (item, w) in futures.items():
                        self._retry_or_raise(item, w, e, attempts, pending)
                    pending.extend(todo)
                except (KeyboardInterrupt, SystemExit):
                    _stop_workers(pool)  # Ctrl-C: do not wait for the running tasks
                    self._drop_pool()
                    raise
                finally:
                    if futures and self._pool is pool:
                        # left with tasks running (a failure raised, or the caller stopped
                        # iterating): this pool is not reused
                        _stop_workers(pool)
                        self._drop_pool()
        finally:
            progress.close()

    def _drop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __exit__(self, exc_type, *rest: object) -> None:
        if exc_type is None:
            self._drop_pool()  # the run is over: idle workers exit
        self.close()

    def close(self) -> None:
        # a map abandoned mid-way (Ctrl-C or an error raised in the caller's loop):
        # stop the workers now
        pool, self._pool = self._pool, None
        if pool is not None:
            _stop_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)

    def _retry_or_raise(self, item: Any, w: float, err: BaseException, attempts: dict[int, int], pending: list) -> None:
        if not retryable(err):
            raise err
        key = id(item)
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] > self.cfg.max_retries:
            raise TaskFailed(f"{describe(item)} failed {attempts[key]} times; last error: {err!r}") from err
        delay = min(30.0, 0.5 * 2 ** (attempts[key] - 1))
        log.warning("%s failed (%r); retry %d/%d in %.1fs", describe(item), err, attempts[key], self.cfg.max_retries, delay)
        time.sleep(delay)
        pending.append((item, w))


def _start_forkserver_deaf_to_ctrl_c() -> None:
    """Start the forkserver (and the resource tracker) with SIGINT ignored.

    A forked worker gets the forkserver's *initial* SIGINT disposition back, and
    ``lifeline.worker_init`` ignores SIGINT only after the worker has imported the
    pipeline (a second or more on a busy machine). A Ctrl-C in that window printed a
    KeyboardInterrupt traceback from the worker. Started with SIGINT ignored (kept
    across exec, and Python leaves an ignored SIGINT alone), the forkserver hands
    every worker an ignored SIGINT from its first instruction; the driver alone
    handles Ctrl-C. The driver ignores SIGINT only while it spawns the two processes.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal works in the main thread only; the pool still works
    from multiprocessing import forkserver

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Kill a pool's workers: an interrupted run does not wait for its running tasks
    (their outputs are atomic, so a rerun redoes them). ``_processes`` is private but
    has held the pool's ``multiprocessing.Process`` objects since Python 3.2."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            proc.kill()
        except (OSError, ValueError):
            pass
