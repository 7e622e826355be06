"""A run's rows as one dataset: where they live and how to read them.

The rows of a run sit under one folder, hive-partitioned by language and, once
perplexity runs, by bucket::

    <out>/data/language=en/bucket=head/part-00000.parquet
    <out>/data/language=de/part-00003.parquet          (no perplexity step)

so ``pyarrow.dataset.dataset(out / "data", partitioning="hive")``,
``pyarrow.parquet.read_table(out / "data")``, DuckDB's
``read_parquet('out/data/**/*.parquet', hive_partitioning = true)``, Spark and
HF ``datasets`` all read the run as one table with ``language`` and ``bucket``
columns. As in every hive layout, the partition columns live in the folder
names, not in the files. Stats, reports, work files and geometry stay beside
``data/`` in the run directory.

Every reader of a run's rows in this project (audit, geometry, model tools,
benchmarks, tests) goes through :func:`shard_files` and :func:`read_rows`, so
the layout is known in one place. Runs written before this layout
(``<out>/<language>[_<bucket>]/part-*.parquet``) are still read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

DATA_DIR = "data"
PARTITION_KEYS = ("language", "bucket")
DROPPED_DIR = "dropped"
"""Dropped documents (:mod:`ccpipe.dropped`): ``dropped/docs/``, ``dropped/summary/``, ``dropped/cluster_kept/``."""


def data_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / DATA_DIR


def partition_path(language: str | None, bucket: str | None) -> str:
    """The relative folder of a partition, e.g. ``language=en/bucket=head``."""
    lang = language or "unknown"
    return f"language={lang}/bucket={bucket}" if bucket else f"language={lang}"


def partition_values(shard: Path) -> dict[str, str]:
    """``{"language": ..., "bucket": ...}`` of a shard file, from its folder names
    (hive ``key=value`` folders, or a legacy ``<language>[_<bucket>]`` folder)."""
    out: dict[str, str] = {}
    for part in shard.parent.parts:
        key, sep, value = part.partition("=")
        if sep and key in PARTITION_KEYS:
            out[key] = value
    if not out:  # legacy layout
        lang, _, bucket = shard.parent.name.partition("_")
        out["language"] = lang
        if bucket:
            out["bucket"] = bucket
    return out


def partition_name(shard: Path) -> str:
    """A short display name of a shard's partition: ``en_head``, ``de``."""
    v = partition_values(shard)
    return f"{v['language']}_{v['bucket']}" if v.get("bucket") else v["language"]


def _visible(p: Path, root: Path) -> bool:
    return not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)


def shard_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Every finished row file of a run (``part-*.parquet``), in a stable order."""
    run = Path(run_dir)
    root = data_dir(run)
    if root.is_dir():
        return sorted(p for p in root.rglob("part-*.parquet") if _visible(p, root))
    # legacy: one folder per partition directly under the run
    return sorted(p for p in run.glob("*/part-*.parquet") if _visible(p, run))


def read_rows(run_dir: str | os.PathLike[str], columns: Sequence[str] | None = None,
              files: Sequence[Path] | None = None) -> pa.Table:
    """The run's rows as one table with plain string ``language`` and ``bucket``
    columns (``bucket`` only when the run has buckets). ``columns`` may name
    partition columns; columns a shard lacks are left out of it (and filled with
    nulls when other shards have them)."""
    files = shard_files(run_dir) if files is None else list(files)
    parts: list[pa.Table] = []
    for path in files:
        values = partition_values(Path(path))
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        want = [c for c in columns if c in names] if columns is not None else None
        t = pf.read(columns=want)
        for key in PARTITION_KEYS:
            if key in values and key not in t.column_names and (columns is None or key in columns):
                t = t.append_column(key, pa.array([values[key]] * t.num_rows, pa.string()))
        parts.append(t)
    if not parts:
        cols = list(columns) if columns is not None else ["id"]
        return pa.table({c: pa.array([], pa.string()) for c in cols})
    return pa.concat_tables(parts, promote_options="permissive")


def dropped_files(run_dir: str | os.PathLike[str], kind: str = "docs") -> list[Path]:
    """The run's finished files of dropped documents (``kind="docs"``: the kept sample with
    text and reasons), of their summary (``"summary"``: one row per dropped document), or
    of MinHash clusters' kept members as MinHash saw them (``"cluster_kept"``)."""
    if kind not in ("docs", "summary", "cluster_kept"):
        raise ValueError(f"kind must be 'docs', 'summary' or 'cluster_kept', got {kind!r}")
    return sorted((Path(run_dir) / DROPPED_DIR / kind).glob("part-*.parquet"))


def read_dropped(run_dir: str | os.PathLike[str], columns: Sequence[str] | None = None,
                 kind: str = "docs", files: Sequence[Path] | None = None) -> pa.Table:
    """Dropped documents of a run as one table (see :func:`dropped_files`; ``files``: only
    these of them); columns a file lacks are filled with nulls; an empty table when the run
    kept none."""
    parts = []
    for path in dropped_files(run_dir, kind) if files is None else files:
        pf = pq.ParquetFile(path)
        want = [c for c in columns if c in pf.schema_arrow.names] if columns is not None else None
        parts.append(pf.read(columns=want))
    if not parts:
        cols = list(columns) if columns is not None else ["id"]
        return pa.table({c: pa.array([], pa.string()) for c in cols})
    return pa.concat_tables(parts, promote_options="permissive")
