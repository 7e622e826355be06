"""A real small run for service and audit tests: pipeline -> embeddings -> tiny score model.

Built once per pytest session (the fixtures that call :func:`build_real_run` are
session-scoped) from the two real WET excerpts in ../shared/data. Embedding reads only the
head of each page (``chars_per_token=1``: 256 characters), which keeps it to seconds on a
shared 2-core machine; the vectors are still real MiniLM embeddings of real pages.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DATA = (Path(__file__).resolve().parent.parent.parent / "shared" / "data").resolve()
WET_FILES = ("CC-MAIN-2017-30-00008.excerpt.warc.wet.gz", "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz")


def pipeline_run(root: Path, data: Path, name: str = "run", files: tuple[str, ...] = WET_FILES) -> Path:
    """``ccpipe run`` on the real excerpts, in a subprocess as a user runs it (its worker
    pool must not inherit the test process's torch threads)."""
    out = root / name
    cmd = [sys.executable, "-m", "ccpipe.cli", "run", *(str(data / "wet" / f) for f in files), "-o", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"ccpipe run failed with exit status {proc.returncode}: {proc.stderr[-2000:]}")
    return out


def add_geometry(run: Path) -> Path:
    """Embed the run and train a tiny score model on it (seconds)."""
    from geometry.embed import EmbedConfig, embed_run
    from geometry.index import build_index
    from geometry.store import EmbeddingStore, geometry_dir
    from geometry.train import TrainConfig, default_model_config, train_score_model

    embed_run(run, EmbedConfig(progress=False, chars_per_token=1, batch_size=32))
    build_index(run)
    data = EmbeddingStore.open(run).tensor()
    cfg = TrainConfig(epochs=3, batch_size=32, seed=0, device="cpu", log_every=10_000)
    cfg = TrainConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "model": default_model_config(data, seed=0, hidden=32, blocks=1)})
    train_score_model(data, cfg, out_dir=geometry_dir(run) / "score")
    return run


def build_real_run(root: Path, data: Path) -> Path:
    return add_geometry(pipeline_run(root, data))


def session_run(tmp_path_factory, data: Path) -> Path:
    """The session's real run, built by whichever test module asks first."""
    root = tmp_path_factory.getbasetemp() / "realrun"
    run = root / "run"
    done = root / "DONE"
    if not done.exists():
        root.mkdir(parents=True, exist_ok=True)
        build_real_run(root, data)
        done.touch()
    return run
