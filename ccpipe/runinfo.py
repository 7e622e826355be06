"""What a run's audit shows besides its rows: the ccpipe version, when and how long each
invocation ran, on what, and the input files.

Written by ``ccpipe run`` as ``<out>/stats/run_info.json`` after the run's stats; a resumed
run appends its invocation, so the file lists every ``ccpipe run`` that worked on the
directory (the run record ``stats/run_config.json`` holds the config and the shards).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import socket
import time
from pathlib import Path
from typing import Any

import ccpipe
from ccpipe.stats import write_json_atomic

PATH = Path("stats") / "run_info.json"


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


def save(out_dir: Path, cfg: Any, started: float, phase_seconds: dict[str, float]) -> None:
    """Append this invocation (``started``: its ``time.time()`` at start) to the run's info."""
    path = Path(out_dir) / PATH
    info: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    inputs = []
    for p in cfg.input.paths:
        try:
            size = Path(p).expanduser().stat().st_size
        except (OSError, ValueError):  # a URL, or gone since
            size = None
        inputs.append({"path": str(p), "bytes": size})
    now = time.time()
    info.setdefault("invocations", []).append({
        "ccpipe_version": ccpipe.__version__,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "executor": cfg.executor.kind,
        "workers": cfg.executor.n_workers,
        "started": _utc(started),
        "finished": _utc(now),
        "wall_seconds": round(now - started, 3),
        "phase_seconds": {k: round(v, 3) for k, v in phase_seconds.items()},
    })
    info["ccpipe_version"] = ccpipe.__version__
    info["inputs"] = inputs
    write_json_atomic(path, info)


def load(run: Path) -> dict[str, Any]:
    path = Path(run) / PATH
    return json.loads(path.read_text()) if path.is_file() else {}
