"""Deterministic fault injection, for the tests of retries and resume.

``CCPIPE_FAULT=<phase>:<point>[:<task>]`` makes the worker that runs task ``<task>``
of ``<phase>`` (any task of it when no task is given) kill itself with SIGKILL at
``<point>``, exactly as an out-of-memory killer would:

- ``start``: before the task does anything;
- ``middle``: after it wrote part of its output (files in place, no completion marker);
- ``done``: after its completion marker is written, before it returns its result
  (the executor then retries a task that has in fact finished).

The fault fires once per run: the first hit creates ``<out>/_work/fault.fired``
(or ``CCPIPE_FAULT_ONCE``), so the retried task runs through. Phases:
``read``, ``minhash_buckets``, ``minhash_cluster``, ``merge``, ``process``,
``cutoffs``, ``finalize``. The driver reads the variable once and hands it to the
tasks with their arguments, so it reaches worker processes started before it was
set; it never fires in the driver itself.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from ccpipe.errors import ConfigError

ENV = "CCPIPE_FAULT"
PHASES = ("read", "minhash_buckets", "minhash_cluster", "merge", "process", "cutoffs", "finalize")
POINTS = ("start", "middle", "done")


@dataclass(frozen=True, slots=True)
class Fault:
    phase: str
    point: str
    task: int | None
    once: str
    driver_pid: int

    @classmethod
    def from_env(cls, work_dir: Path) -> "Fault | None":
        spec = os.environ.get(ENV, "").strip()
        if not spec:
            return None
        parts = spec.split(":")
        if len(parts) not in (2, 3) or parts[0] not in PHASES or parts[1] not in POINTS:
            raise ConfigError(f"{ENV}={spec!r}: expected <phase>:<point>[:<task>] with phase in {PHASES} "
                              f"and point in {POINTS}")
        try:
            task = int(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise ConfigError(f"{ENV}={spec!r}: the task must be an integer") from None
        once = os.environ.get("CCPIPE_FAULT_ONCE") or str(Path(work_dir) / "fault.fired")
        return cls(parts[0], parts[1], task, once, os.getpid())

    def hit(self, phase: str, point: str, task: int) -> None:
        if phase != self.phase or point != self.point or (self.task is not None and task != self.task):
            return
        if os.getpid() == self.driver_pid:
            return
        try:
            fd = os.open(self.once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def hit(fault: Fault | None, phase: str, point: str, task: int) -> None:
    """``fault.hit(...)`` when a fault is configured; nothing otherwise."""
    if fault is not None:
        fault.hit(phase, point, task)
