"""A run's output directory: who may write it, what it records, what outlives the run.

- :func:`prepare`: create the directory and prove it writable before any work,
  or stop with a one-line :class:`ConfigError` that names it.
- :func:`locked`: one ``ccpipe run`` at a time per directory. An exclusive
  ``flock`` on ``<out>/.ccpipe.lock`` is held for the whole run; the file holds
  the holder's pid, host, command and start time, so a second run says who has
  it. :func:`claim` does both for a run, and removes a directory it created
  when the run fails before writing anything. The kernel drops the lock when the holder dies, even by ``kill -9``, so a
  stale file never blocks a resume. (``flock`` works on local disks and on NFS,
  where Linux maps it to NFS byte-range locks.)
- The run record (``<out>/stats/run_config.json``: the config without how it
  runs, and the planned shards): written when a run starts, read by a rerun to
  tell "the same run, resume it" from "another run" and by ``ccpipe audit``.
- :func:`finish`: after a successful run the scratch directory ``<out>/_work``
  (hash sets, staged parquet, MinHash signatures: often larger than the
  output) is deleted, unless ``output.keep_work``. It is renamed first and then
  deleted, so a kill half-way leaves a ``_work.deleting-*`` folder that the
  next run removes, never a half-deleted ``_work``. Nothing a finished run's
  readers need lives in ``_work``: rows, stats and the record stay.
- :func:`is_finished`: ``stats/run.json`` written and ``_work`` gone: a rerun of
  the same command has nothing left to do.
- :func:`progress`: how far an unfinished run got, for audits.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ccpipe.errors import CcpipeError, ConfigError
from ccpipe.stats import write_json_atomic

log = logging.getLogger(__name__)

LOCK_NAME = ".ccpipe.lock"
WORK = "_work"
RECORD = Path("stats") / "run_config.json"
_OLD_RECORD = Path(WORK) / "run.json"  # where runs before this module kept it

# Config keys that change how a run goes, not what it makes: a rerun that changes
# only these resumes the same run.
RUNTIME_KEYS = {
    "output": ("dir", "keep_work"),
    "input": ("retry_attempts", "retry_base_seconds", "retry_max_seconds"),
}


class RunLocked(CcpipeError):
    """Another process holds the output directory's lock."""


def prepare(path: Path, what: str = "output.dir") -> Path:
    """Create ``path`` (with parents) and check that files can be written in it."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".ccpipe-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "choose a directory you can write to"
        else:
            hint = "check the path"
        raise ConfigError(f"{what} {str(path)!r} cannot be used: {reason}; {hint}") from None
    return path


def _holder_text(info: dict[str, Any]) -> str:
    if not info:
        return "another process (it has not written its name yet)"
    return (f"pid {info.get('pid')} on host {info.get('host')} since {info.get('started')} "
            f"(command: {info.get('command')})")


def holder(out_dir: Path) -> dict[str, Any] | None:
    """Who holds the run lock of ``out_dir`` now (pid, host, command, started),
    or None when no run holds it."""
    path = Path(out_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_info(fd)
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_info(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 64 * 1024, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


@contextmanager
def locked(out_dir: Path) -> Iterator[dict[str, Any]]:
    """Hold the run lock of ``out_dir`` for the duration of the block."""
    path = Path(out_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ConfigError(f"output.dir {str(out_dir)!r}: cannot create its lock file: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(
                f"{out_dir} is in use by another ccpipe run: {_holder_text(_read_info(fd))}. "
                "Wait for it to finish or stop it, or write to another directory (--out)"
            ) from None
        except OSError as e:  # a file system without locks: run, but say so
            log.warning("%s: cannot lock the output directory (%s); make sure no other run writes to it",
                        out_dir, e.strerror)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python",
            "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        _remove_stale_deletions(Path(out_dir))
        yield info
        os.ftruncate(fd, 0)  # released: the file names nobody
    finally:
        os.close(fd)  # closing drops the lock


@contextmanager
def claim(out_dir: Path) -> Iterator[Path]:
    """:func:`prepare` + :func:`locked` for a run; a directory this call created is
    removed again when the run fails before writing anything into it (a missing
    model, a bad input path), so a failed start leaves no trace."""
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    prepare(out_dir)
    try:
        with locked(out_dir):
            yield out_dir
    except BaseException:
        if created and {p.name for p in out_dir.iterdir()} <= {LOCK_NAME}:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def load_record(out_dir: Path) -> dict[str, Any] | None:
    """The run record of ``out_dir``, or None when it holds no run."""
    for rel in (RECORD, _OLD_RECORD):
        p = Path(out_dir) / rel
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except ValueError:
                return None
    return None


def save_record(out_dir: Path, record: dict[str, Any]) -> None:
    write_json_atomic(Path(out_dir) / RECORD, record)


def strip_runtime_keys(config: dict[str, Any]) -> dict[str, Any]:
    """Drop the keys of :data:`RUNTIME_KEYS` from a ``PipelineConfig.to_dict()`` (in place)."""
    for section, keys in RUNTIME_KEYS.items():
        for k in keys:
            (config.get(section) or {}).pop(k, None)
    return config


def is_finished(out_dir: Path) -> bool:
    """The run in ``out_dir`` completed and its scratch space is gone."""
    out_dir = Path(out_dir)
    return (out_dir / "stats" / "run.json").is_file() and not (out_dir / WORK).exists()


def finish(out_dir: Path, keep_work: bool) -> None:
    """After a successful run: delete ``<out>/_work`` unless ``keep_work``."""
    work = Path(out_dir) / WORK
    if keep_work or not work.exists():
        return
    trash = Path(out_dir) / f"{WORK}.deleting-{os.getpid()}"
    os.rename(work, trash)
    shutil.rmtree(trash, ignore_errors=True)
    log.info("deleted the scratch directory %s (output.keep_work / --keep-work keeps it)", work)


def _remove_stale_deletions(out_dir: Path) -> None:
    for p in out_dir.glob(f"{WORK}.deleting-*"):
        shutil.rmtree(p, ignore_errors=True)


def progress(out_dir: Path) -> str | None:
    """None for a finished run; else a sentence on how far it got and whether it runs."""
    out_dir = Path(out_dir)
    if (out_dir / "stats" / "run.json").is_file():
        return None
    record = load_record(out_dir) or {}
    planned = len(record.get("shards") or [])
    done = len(list((out_dir / "stats" / "shards").glob("part-*.json")))
    who = holder(out_dir)
    state = (f"still running ({_holder_text(who)})" if who is not None
             else "stopped before its last phase (run the same `ccpipe run` command again to finish it)")
    of = f" of {planned}" if planned else ""
    return (f"unfinished run: {done}{of} shard(s) have finished every phase; it is {state}. "
            "Figures below cover the finished shards only.")
