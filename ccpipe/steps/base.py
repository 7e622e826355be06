"""The step interface every stage implements.

A step is configured in its constructor (pickles as its config), loads models in
``prepare`` (called once per worker process, never in the driver), and maps an
iterator of :class:`Document` to an iterator of documents in ``run``. It never
knows which executor runs it; everything about the shard it works on comes in
the :class:`TaskContext`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import pyarrow as pa

from ccpipe.document import Document
from ccpipe.stats import Stats, StepStats


@dataclass(slots=True)
class TaskContext:
    """What a step may know about the shard it is processing."""

    task_id: int
    """Index of the shard (task) in the run, stable across reruns."""
    work_dir: Path
    """The run's private scratch directory (``<out>/_work``)."""
    stats: Stats
    group_id: int = 0
    """Index of the shard group (line-dedup hash sets are shared per group)."""
    index_in_group: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    dropped: Any = None
    """Where the documents steps drop are kept (:class:`ccpipe.dropped.DropSink`), or None."""

    def step_stats(self, name: str) -> StepStats:
        return self.stats.step(name)


class Step:
    """Base class: override ``run``, or use :class:`Filter` / :class:`Annotator`."""

    name: ClassVar[str] = "step"
    output_fields: ClassVar[dict[str, pa.DataType]] = {}
    """Columns this step adds to the output (values go in ``Document.extras``)."""

    def prepare(self, ctx: TaskContext) -> None:
        """Load models and other per-process state. Called before ``run`` in a worker."""

    def _unloaded(self) -> dict[str, Any]:
        """Attributes that hold what ``prepare`` loads, with their values before it."""
        return {}

    def __getstate__(self) -> dict[str, Any]:
        # a step pickles as its config: models load in the worker, never travel
        return {**self.__dict__, **self._unloaded()}

    def run(self, docs: Iterable[Document], ctx: TaskContext) -> Iterator[Document]:
        raise NotImplementedError

    def drop(self, ctx: TaskContext, reason: str) -> None:
        ctx.stats.step(self.name).dropped[reason] += 1


class Filter(Step):
    """A step that keeps or drops each document, with a reason for every drop."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        raise NotImplementedError

    def run(self, docs: Iterable[Document], ctx: TaskContext) -> Iterator[Document]:
        dropped = ctx.stats.step(self.name).dropped
        for doc in docs:
            verdict = self.filter(doc)
            keep, reason = verdict if isinstance(verdict, tuple) else (verdict, "filtered")
            if keep:
                yield doc
            else:
                dropped[reason] += 1


def counted(step: Step, docs: Iterable[Document], ctx: TaskContext) -> Iterator[Document]:
    """Run ``step`` over ``docs`` and count documents/characters in and out of it.

    Written once and used by every executor, so in/out counts are the same
    whatever runs the step. Time spent inside the step (its own generator frames,
    not the upstream ones) is accumulated in ``seconds``. With ``ctx.dropped`` set,
    every document the step drops is handed to it with its reason (and every one it
    keeps to its ``passed``), which needs steps to take one document and yield it or
    not before taking the next, as every step here does.
    """
    st = ctx.stats.step(step.name)
    clock = time.perf_counter
    upstream = 0.0
    sink = ctx.dropped
    # Dropped documents, for ``ctx.dropped``: steps take one document, then yield it or
    # not, before they take the next; so a document not yielded by the time the next is
    # taken (or the input ends) was dropped, for the reason whose count grew meanwhile.
    last: list = [None, None, False]  # the document in the step, drop counts before it, yielded

    def settle() -> None:
        doc, before, out = last
        if doc is None or out:
            return
        grew = [r for r, n in st.dropped.items() if n != before.get(r, 0)]
        if grew:  # else the step yielded another object in its place: not a drop
            sink.add(step, grew[0] if len(grew) == 1 else "unattributed", doc)

    def inputs() -> Iterator[Document]:
        nonlocal upstream
        it = iter(docs)
        while True:
            if sink is not None:
                settle()
            t0 = clock()
            try:
                doc = next(it)
            except StopIteration:
                upstream += clock() - t0
                return
            upstream += clock() - t0
            st.docs_in += 1
            st.chars_in += len(doc.raw_content)
            if sink is not None:
                last[:] = doc, dict(st.dropped), False
            yield doc

    out = step.run(inputs(), ctx)
    while True:
        t0 = clock()
        up0 = upstream
        try:
            doc = next(out)
        except StopIteration:
            st.seconds += (clock() - t0) - (upstream - up0)
            return
        st.seconds += (clock() - t0) - (upstream - up0)
        if sink is not None and doc is last[0]:
            last[2] = True
            sink.passed(step, doc)
        st.docs_out += 1
        st.chars_out += len(doc.raw_content)
        yield doc
