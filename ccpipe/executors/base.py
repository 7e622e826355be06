"""The executor interface and the progress display both executors share."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator, Sequence

from ccpipe.errors import CcpipeError

log = logging.getLogger(__name__)


class TaskFailed(CcpipeError):
    """A task kept failing after its retries; finished tasks are kept on disk."""


def retryable(err: BaseException) -> bool:
    """Whether running a failed task again can help. ccpipe's own errors say that an
    input, a config value or a model is wrong (an input has had its download
    retries already): the same task would fail the same way, so they stop the
    run at once with their own message."""
    return not isinstance(err, CcpipeError)


class Executor:
    """Map a picklable function over items, yielding ``(item, result)`` as they finish.

    ``weights`` (e.g. compressed bytes per shard) drive the progress bar and ETA;
    results that are dicts with a ``"docs"`` key feed the docs/s figure.
    """

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        *,
        desc: str,
        weights: Sequence[float] | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Progress:
    """A tqdm bar over item weights with a docs/s postfix and an ETA."""

    def __init__(self, desc: str, weights: Sequence[float], enabled: bool = True):
        from tqdm import tqdm

        self.use_weights = sum(weights) > 0 and len(set(weights)) > 0 and any(w != 1.0 for w in weights)
        self.bar = tqdm(
            total=float(sum(weights)) if self.use_weights else len(weights),
            desc=desc,
            unit="B" if self.use_weights else "task",
            unit_scale=self.use_weights,
            disable=not enabled,
            dynamic_ncols=True,
            smoothing=0.1,
        )
        self.start = time.perf_counter()
        self.docs = 0

    def update(self, weight: float, result: Any) -> None:
        self.bar.update(weight if self.use_weights else 1)
        if isinstance(result, dict) and "docs" in result:
            self.docs += int(result["docs"])
            rate = self.docs / max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix_str(f"{self.docs} docs, {rate:,.0f} docs/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


def items_with_weights(items: Sequence[Any], weights: Sequence[float] | None) -> list[tuple[Any, float]]:
    w = list(weights) if weights is not None else [1.0] * len(items)
    if len(w) != len(items):
        raise ValueError("weights and items differ in length")
    return list(zip(items, w))


def describe(item: Any) -> str:
    """A short name for a task in logs: its shard if it has one."""
    parts = item if isinstance(item, tuple) else (item,)
    for p in reversed(parts):
        if hasattr(p, "task_id") and hasattr(p, "path"):
            return f"shard {p.task_id} ({p.path})"
    text = repr(item)
    return text if len(text) < 120 else text[:117] + "..."
