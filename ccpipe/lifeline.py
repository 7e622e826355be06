"""Helper processes end when the driver ends, however it ends.

``kill -9`` of ``ccpipe run`` (an OOM killer, a scheduler) gives the driver no
chance to stop what it started. Without help, pool workers wait forever for
their next task (each holding its models, hundreds of MB), and they keep the
forkserver and the resource tracker alive too.

- **Local executor.** Every pool worker, when it starts (:func:`worker_init`),
  asks the kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``:
  under the forkserver the parent is the forkserver) and watches the driver
  itself through a pidfd (:func:`exit_when_gone`; a 1 s poll where pidfds are
  missing). Once the workers have gone, the forkserver and the resource
  tracker see their pipes close and exit by themselves. Workers also ignore
  SIGINT: Ctrl-C reaches the whole process group, and the driver, not each
  worker, decides what happens (it stops them and says how to resume).
- **Ray started by the run.** Ray kills its GCS server and raylet when the
  driver dies, but its dashboard and runtime-env agents then wait about a
  minute on the dead GCS before they exit. A :class:`Guardian`, a small
  process in its own session, is given the Ray processes the driver started;
  if the driver dies without releasing it, it kills them (and what they
  started) at once.

Linux only: elsewhere these are no-ops and the old behaviour remains.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 1.0


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits; None where unsupported.
    Raises ProcessLookupError when the process has already gone."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise
    except (AttributeError, OSError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_exit(pid: int, fd: int | None) -> None:
    if fd is not None:
        select.select([fd], [], [])
        return
    while _alive(pid):
        time.sleep(_POLL_SECONDS)


def exit_when_gone(pid: int, code: int = 1) -> None:
    """End this process (``os._exit``) as soon as process ``pid`` exits."""
    try:
        fd = _pidfd(pid)
    except ProcessLookupError:
        os._exit(code)

    def watch() -> None:
        _wait_for_exit(pid, fd)
        os._exit(code)

    threading.Thread(target=watch, name=f"ccpipe-lifeline-{pid}", daemon=True).start()


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a scheduler's polite stop before SIGKILL), raised in the
    driver where Ctrl-C's KeyboardInterrupt would be, so it takes the same way out:
    workers stopped, finished work kept, one line saying how to resume."""


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated()


def stop_on_sigterm() -> None:
    """Let SIGTERM stop a command the way Ctrl-C does (exit status 143, not a silent
    death that leaves the user guessing). Main thread only; a no-op elsewhere."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def interrupt_words(exc: BaseException) -> tuple[str, int]:
    """How an interrupted command says what stopped it, and its exit status."""
    if isinstance(exc, Terminated):
        return "terminated by SIGTERM", 128 + signal.SIGTERM
    return "interrupted", 128 + signal.SIGINT


_STARTED_DEAF_TO_CTRL_C: bool | None = None


def started_deaf_to_ctrl_c(_: object = None) -> bool | None:
    """In a pool worker: whether SIGINT was already ignored when it started, before
    :func:`worker_init` ignored it (None outside a worker). A task, for tests."""
    return _STARTED_DEAF_TO_CTRL_C


def worker_init(driver_pid: int) -> None:
    """Initializer of local pool workers: die with the driver, leave Ctrl-C to it."""
    global _STARTED_DEAF_TO_CTRL_C
    _STARTED_DEAF_TO_CTRL_C = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    exit_when_gone(driver_pid)


# --- a guardian for processes that do not watch the driver themselves ----------------


class Guardian:
    """A process that kills ``targets`` if this (driver) process dies without
    calling :meth:`release`. It runs in its own session, so Ctrl-C in the
    terminal and a kill of the driver's process group leave it alone."""

    def __init__(self, targets: list[tuple[int, float]]):
        self.targets = targets
        self.proc: subprocess.Popen | None = None
        if not sys.platform.startswith("linux") or not targets:
            return
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ccpipe.lifeline", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(targets).encode() + b"\n")
        self.proc.stdin.flush()

    @classmethod
    def of_new_descendants(cls, before: set[int]) -> "Guardian":
        """Guard every descendant of this process whose pid is not in ``before``."""
        import psutil

        targets = []
        for p in psutil.Process().children(recursive=True):
            if p.pid in before:
                continue
            try:
                targets.append((p.pid, p.create_time()))
            except psutil.Error:
                continue
        return cls(targets)

    def release(self) -> None:
        """The driver is closing in order: the guardian exits without killing anything."""
        if self.proc is None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"release\n")
            self.proc.stdin.close()
        except OSError:
            pass
        reap(self.proc)
        self.proc = None


def reap(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Wait for a child asked to exit; SIGKILL it if it has not within ``timeout`` s."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def descendant_pids() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _kill_targets(targets: list[tuple[int, float]]) -> int:
    import psutil

    doomed: dict[int, psutil.Process] = {}
    for pid, created in targets:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) > 0.01:
                continue  # the pid was reused by another process
            doomed[p.pid] = p
            for c in p.children(recursive=True):
                doomed[c.pid] = c
        except psutil.Error:
            continue
    for p in doomed.values():
        try:
            p.kill()
        except psutil.Error:
            pass
    return len(doomed)


def _guard(driver_pid: int) -> int:
    """The guardian's main loop: targets on the first line of stdin, then wait."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    targets = [tuple(t) for t in json.loads(stdin.readline() or b"[]")]
    try:
        fd = _pidfd(driver_pid)
    except ProcessLookupError:  # gone before we started watching
        _kill_targets(targets)
        return 0
    watched = [stdin] + ([fd] if fd is not None else [])
    while True:
        ready, _, _ = select.select(watched, [], [], None if fd is not None else _POLL_SECONDS)
        if stdin in ready:
            line = stdin.readline()
            if line.strip() == b"release":
                return 0
            if not line:  # the driver closed its end (or died): from now on only its exit counts
                watched.remove(stdin)
                if not watched:  # no pidfd: fall back to polling
                    while _alive(driver_pid):
                        time.sleep(_POLL_SECONDS)
                    break
        if fd is not None and fd in ready:
            break
        if fd is None and not _alive(driver_pid):
            break
    _kill_targets(targets)
    return 0


if __name__ == "__main__":
    sys.exit(_guard(int(sys.argv[1])))
