"""Ray tasks, on this machine or on a cluster (``executor.ray_address``).

The same ``map`` as the local executor: one Ray task per item, results yielded as
tasks finish. Retries are Ray's own: ``max_retries`` covers a worker process that
dies (killed, out of memory, node lost) and, with ``retry_exceptions``, a task
that raises; after the last attempt the run stops with :class:`TaskFailed`, and
finished tasks stand on disk, so a rerun resumes.

Ray workers are long-lived processes, so the per-process step cache of
``ccpipe.pipeline`` (models loaded once per worker) works as it does in the
local pool. Every task reads and writes ``output.dir`` directly: on a cluster it
must be storage that every node mounts at the same path (docs/cluster.md).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Sequence

from ccpipe import lifeline
from ccpipe.config import ExecutorConfig
from ccpipe.errors import ConfigError
from ccpipe.executors.base import Executor, Progress, TaskFailed, describe, items_with_weights, retryable

log = logging.getLogger(__name__)


class _NotRetryable:
    """A task's error that retrying cannot fix (``retryable``), returned rather than
    raised so that Ray does not retry it."""

    def __init__(self, error: BaseException):
        self.error = error


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    try:
        return fn(item)
    except Exception as e:
        if retryable(e):
            raise
        return _NotRetryable(e)


class RayExecutor(Executor):
    def __init__(self, cfg: ExecutorConfig):
        try:
            import ray
        except ImportError:
            raise ConfigError("executor.kind=ray needs Ray: pip install 'ccpipe[cluster]' (or 'ray>=2.9')") from None
        self.cfg = cfg
        self._ray = ray
        self._owns = False
        self._guardian: lifeline.Guardian | None = None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = dict(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
            if cfg.ray_address:
                ray.init(address=cfg.ray_address, **kwargs)
            else:
                before = lifeline.descendant_pids()
                ray.init(num_cpus=cfg.workers or None, **kwargs)
                # the Ray processes this run started go when it goes, even by kill -9
                self._guardian = lifeline.Guardian.of_new_descendants(before)
            self._owns = True
        self._remote = ray.remote(_call).options(
            num_cpus=1, max_retries=cfg.max_retries, retry_exceptions=True
        )
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # tasks queued ahead of the free CPUs: enough to keep every CPU busy,
        # few enough that a 100k-shard run does not pickle every argument at once
        self.max_in_flight = max(2, 2 * cpus)
        log.info("ray: %d CPU(s) in the cluster", cpus)

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        *,
        desc: str,
        weights: Sequence[float] | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        ray = self._ray
        todo = items_with_weights(items, weights)
        if not todo:
            return
        todo.reverse()  # pop() from the end takes items in their given order
        progress = Progress(desc, [w for _, w in todo], self.cfg.progress)
        fn_ref = ray.put(fn)
        running: dict[Any, tuple[Any, float]] = {}
        try:
            while todo or running:
                while todo and len(running) < self.max_in_flight:
                    item, w = todo.pop()
                    running[self._remote.remote(fn_ref, item)] = (item, w)
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    item, w = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - Ray retried it already
                        cause = getattr(e, "cause", None) or e
                        raise TaskFailed(
                            f"{describe(item)} failed (Ray retries up to {self.cfg.max_retries}); last error: {cause!r}"
                        ) from e
                    if isinstance(result, _NotRetryable):
                        raise result.error
                    progress.update(w, result)
                    yield item, result
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            progress.close()

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        if self._guardian is not None:
            self._guardian.release()
            self._guardian = None
