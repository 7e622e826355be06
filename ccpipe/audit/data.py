"""Everything an audit reads from a run, loaded once: stats, document columns, cutoffs, geometry.

Each part is optional: a run without perplexity, MinHash or geometry still gets a report,
whose sections say "not computed in this run" with the command that would compute it.
Only the columns the report needs are read (never ``raw_content``), so a large run's
audit reads a small fraction of its bytes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ccpipe.errors import CcpipeError
from ccpipe.stats import Stats

log = logging.getLogger(__name__)

COLUMNS = ("id", "url", "title", "source_domain", "language", "language_score", "length", "nlines", "original_length",
           "perplexity", "bucket", "ref_score", "quality_score", "dup_cluster_id", "dup_cluster_size")
DROPPED_COLUMNS = ("id", "url", "title", "source_domain", "language", "length", "nlines", "drop_step", "drop_reason",
                   "drop_value", "drop_detail", "dup_cluster_id", "dup_kept_id")


@dataclass(slots=True, frozen=True, kw_only=True)
class AuditConfig:
    """What the audit computes; the defaults suit runs up to a few million documents."""

    top_atypical: int = 15
    """Most atypical documents listed (geometry's validated atypicality, see docs/geometry.md)."""
    atypical_share: float = 0.2
    """k of the k-NN atypicality as a share of its reference sample (see geometry/atypical.py)."""
    near_dup_cosine: float = 0.95
    """Two documents whose embeddings' cosine reaches this are near-duplicates in embedding space."""
    near_dup_neighbours: int = 10
    """ANN neighbours examined per document for near-duplicate pairs."""
    max_clusters_listed: int = 10
    """Embedding-space clusters listed with sample titles."""
    max_languages_plotted: int = 8
    """Perplexity histograms for this many of the largest languages."""
    geometry_sample: int = 200_000
    """Documents whose atypicality is computed at most (a seeded sample beyond that)."""
    examples_per_reason: int = 3
    """Dropped documents shown per drop reason (the first ones the run kept, in shard order)."""
    text_chars: int = 300
    """Characters of a document's text shown in an example."""
    samples_per_partition: int = 2
    """Kept documents shown per language and bucket."""
    max_partitions_sampled: int = 16
    """Partitions (language and bucket) with samples shown, largest first."""
    top_domains: int = 20
    """Domains in the per-domain table and chart."""
    clusters_shown: int = 3
    """MinHash clusters shown side by side (kept member and a removed one)."""
    cluster_chars: int = 1500
    """Characters of each member compared in a MinHash cluster view."""
    max_files_listed: int = 50
    """Input files listed (and in the config shown); the rest are counted."""

    def __post_init__(self) -> None:
        if not 0 < self.near_dup_cosine <= 1:
            raise ValueError("near_dup_cosine must lie in (0, 1]")
        if not 0 < self.atypical_share < 1:
            raise ValueError("atypical_share must lie in (0, 1)")
        if min(self.top_atypical, self.near_dup_neighbours, self.max_clusters_listed, self.max_languages_plotted, self.geometry_sample,
               self.examples_per_reason, self.text_chars, self.samples_per_partition, self.max_partitions_sampled,
               self.top_domains, self.clusters_shown, self.cluster_chars, self.max_files_listed) < 1:
            raise ValueError("counts must be >= 1")


@dataclass(slots=True, kw_only=True)
class Geometry:
    """Embedding-space figures of a run, all read through geometry's public API."""

    atypicality: object | None
    """``geometry.Atypicality`` (ids, score, method, detail) of the sampled documents."""
    clusters: list[list[str]]
    """Near-duplicate clusters in embedding space (size >= 2), largest first."""
    pairs_checked: int
    score_report: dict | None = None
    """``geometry.score_model_report``: held-out loss per rung against the Gaussian baseline,
    the metric's sigma; None when no score model was trained."""
    note: str = ""


@dataclass(slots=True, kw_only=True)
class RunData:
    run: Path
    stats: dict
    """``Stats.to_dict()`` of the run."""
    docs: pa.Table
    """Kept documents: the available COLUMNS plus ``partition``, ``file`` (index into ``files``) and ``row``."""
    files: list[Path] = field(default_factory=list)
    """The run's row files (``ccpipe.io.dataset.shard_files``), for reading a few texts."""
    dropped: pa.Table | None = None
    """The dropped documents the run kept (DROPPED_COLUMNS, no text) plus ``file``/``row``
    into ``dropped_files``; None when the run kept none (``output.keep_dropped: none``, older runs)."""
    dropped_files: list[Path] = field(default_factory=list)
    dropped_summary: pa.Table | None = None
    """One row per dropped document (domain, length, lines, step, reason, value), or None."""
    cluster_kept: dict[str, tuple[int, int]] = field(default_factory=dict)
    """MinHash clusters' kept members as MinHash saw them: id -> (file, row) in ``cluster_kept_files``."""
    cluster_kept_files: list[Path] = field(default_factory=list)
    record: dict = field(default_factory=dict)
    """The run record (``stats/run_config.json``: config, shards, steps)."""
    info: dict = field(default_factory=dict)
    """``stats/run_info.json`` (``ccpipe.runinfo``): version, invocations and timings, inputs."""
    cutoffs: dict[str, list[float]] | None = None
    cutoff_source: str | None = None
    head_percentile: int = 30
    middle_percentile: int = 60
    geometry: Geometry | None = None
    geometry_note: str = ""
    unfinished: str | None = None
    """For a run that has not finished: how far it got (``ccpipe.rundir.progress``)."""
    warnings: list[str] = field(default_factory=list)

    def has(self, column: str) -> bool:
        """The column exists and holds at least one real value."""
        if column not in self.docs.column_names:
            return False
        col = self.docs.column(column)
        if col.null_count == len(col):
            return False
        if column == "perplexity":
            # Runs before the hive layout wrote -1 for documents without a model; now null.
            return bool(np.any(np.asarray(col.fill_null(-1).to_numpy(zero_copy_only=False), dtype=float) >= 0))
        return True


def load_stats(run: Path) -> dict:
    path = run / "stats" / "run.json"
    if path.is_file():
        return Stats.load(path).to_dict()
    shards = sorted((run / "stats" / "shards").glob("*.json"))
    if not shards:
        from ccpipe.rundir import WORK, load_record

        if load_record(run) is None and not (run / WORK).is_dir():
            raise CcpipeError(f"{run} has no stats/run.json nor stats/shards/*.json: is it an output directory of `ccpipe run`?")
        log.warning("%s: unfinished run, no shard has finished yet", run)
        return Stats().to_dict()
    merged = Stats()
    for p in shards:
        merged.merge(Stats.load(p))
    log.warning("%s: no stats/run.json (unfinished run?); merged %d shard stats", run, len(shards))
    return merged.to_dict()


def load_docs(run: Path) -> tuple[pa.Table, list[Path]]:
    from ccpipe.io.dataset import partition_name, read_rows, shard_files

    parts = []
    files = shard_files(run)
    for k, path in enumerate(files):
        t = read_rows(run, COLUMNS, files=[path])
        t = t.append_column("partition", pa.array([partition_name(path)] * t.num_rows, type=pa.string()))
        t = t.append_column("file", pa.array([k] * t.num_rows, type=pa.int32()))
        t = t.append_column("row", pa.array(range(t.num_rows), type=pa.int32()))
        parts.append(t)
    if not parts:
        return pa.table({"id": pa.array([], pa.string()), "partition": pa.array([], pa.string()),
                         "file": pa.array([], pa.int32()), "row": pa.array([], pa.int32())}), files
    return pa.concat_tables(parts, promote_options="permissive"), files


def load_dropped(run: Path) -> tuple[pa.Table | None, list[Path], pa.Table | None]:
    """The run's kept dropped documents (no text; ``file``/``row`` locate each), their files,
    and the one-row-per-drop summary; Nones when the run kept none."""
    from ccpipe.io.dataset import dropped_files, read_dropped

    files = dropped_files(run, "docs")
    parts = []
    for k, path in enumerate(files):
        t = read_dropped(run, DROPPED_COLUMNS, files=[path])
        t = t.append_column("file", pa.array([k] * t.num_rows, type=pa.int32()))
        t = t.append_column("row", pa.array(range(t.num_rows), type=pa.int32()))
        parts.append(t)
    docs = pa.concat_tables(parts, promote_options="permissive") if parts else None
    summary = read_dropped(run, kind="summary") if dropped_files(run, "summary") else None
    return docs, files, summary


def load_cluster_kept(run: Path) -> tuple[dict[str, tuple[int, int]], list[Path]]:
    from ccpipe.io.dataset import dropped_files, read_dropped

    files = dropped_files(run, "cluster_kept")
    where: dict[str, tuple[int, int]] = {}
    for k, path in enumerate(files):
        for row, i in enumerate(read_dropped(run, ["id"], kind="cluster_kept", files=[path]).column("id").to_pylist()):
            where.setdefault(i, (k, row))
    return where, files


def cluster_kept_texts(d: "RunData", locations: list[tuple[int, int]]) -> list[str]:
    from ccpipe.io.dataset import read_dropped

    return texts(d.cluster_kept_files, locations,
                 lambda p: read_dropped(d.run, ["raw_content"], kind="cluster_kept", files=[p]).column("raw_content"))


def texts(files: list[Path], locations: list[tuple[int, int]], reader) -> list[str]:
    """``raw_content`` of the documents at (file index, row) in ``files``; each file read once,
    its text column only. ``reader(path)`` returns the file's ``raw_content`` column."""
    out: dict[tuple[int, int], str] = {}
    for f in sorted({f for f, _ in locations}):
        col = reader(files[f])
        for ff, r in locations:
            if ff == f:
                out[(ff, r)] = col[r].as_py() or ""
    return [out[loc] for loc in locations]


def kept_texts(d: "RunData", locations: list[tuple[int, int]]) -> list[str]:
    from ccpipe.io.dataset import read_rows

    return texts(d.files, locations, lambda p: read_rows(d.run, ["raw_content"], files=[p]).column("raw_content"))


def dropped_texts(d: "RunData", locations: list[tuple[int, int]]) -> list[str]:
    from ccpipe.io.dataset import read_dropped

    return texts(d.dropped_files, locations, lambda p: read_dropped(d.run, ["raw_content"], files=[p]).column("raw_content"))


def _run_config(run: Path) -> dict:
    from ccpipe.rundir import load_record

    return (load_record(run) or {}).get("config", {}) or {}


def load_cutoffs(run: Path, cfg: dict) -> tuple[dict[str, list[float]] | None, str | None]:
    """The percentile table the run bucketed with: the run's configured one, else the default."""
    try:
        from ccpipe.models import cutoff_path
        from ccpipe.steps.perplexity import load_cutoffs as read_table
    except ImportError:  # an older tree without the perplexity step
        return None, None
    pcfg = cfg.get("perplexity") or {}
    candidates = [run / "cutoff.csv", run / "stats" / "cutoff.csv"]
    if pcfg.get("cutoffs"):
        candidates.append(Path(pcfg["cutoffs"]))
    if pcfg.get("model_dir"):
        candidates.append(Path(pcfg["model_dir"]) / "cutoff.csv")
    candidates.append(cutoff_path())
    for p in candidates:
        if p.is_file():
            try:
                return read_table(p), str(p)
            except CcpipeError as e:
                log.warning("cutoff table %s unusable: %s", p, e)
    return None, None


def load_run(run: str | Path, config: AuditConfig | None = None, *, with_geometry: bool = True) -> RunData:
    cfg = config or AuditConfig()
    run = Path(run)
    if not run.is_dir():
        raise CcpipeError(f"run directory {run} does not exist")
    from ccpipe.rundir import progress

    from ccpipe import runinfo
    from ccpipe.rundir import load_record

    docs, files = load_docs(run)
    data = RunData(run=run, stats=load_stats(run), docs=docs, files=files, unfinished=progress(run))
    data.dropped, data.dropped_files, data.dropped_summary = load_dropped(run)
    data.cluster_kept, data.cluster_kept_files = load_cluster_kept(run)
    data.record = load_record(run) or {}
    data.info = runinfo.load(run)
    rcfg = _run_config(run)
    pcfg = rcfg.get("perplexity") or {}
    data.head_percentile = int(pcfg.get("head_percentile", 30))
    data.middle_percentile = int(pcfg.get("middle_percentile", 60))
    if data.has("perplexity"):
        data.cutoffs, data.cutoff_source = load_cutoffs(run, rcfg)
    if with_geometry:
        data.geometry, data.geometry_note = load_geometry(run, data.docs, cfg)
    return data


def load_geometry(run: Path, docs: pa.Table, cfg: AuditConfig) -> tuple[Geometry | None, str]:
    """Atypical documents, near-duplicate clusters and the score model's validation, when the
    run has been embedded; everything through ``geometry``'s public API."""
    try:
        import geometry
    except ImportError as e:
        return None, f"the geometry extra is not installed ({e.name}): pip install 'ccpipe[geometry]'"
    if not geometry.has_embeddings(run):
        return None, f"run `ccpipe-geometry embed {run}` and `ccpipe-geometry train {run}` to compute it"
    clusters, checked = geometry.near_duplicate_clusters(run, cosine=cfg.near_dup_cosine, neighbours=cfg.near_dup_neighbours)
    atyp = geometry.run_atypicality(run, share=cfg.atypical_share, sample=cfg.geometry_sample)
    if not geometry.has_score_model(run):
        return Geometry(atypicality=atyp, clusters=clusters, pairs_checked=checked,
                        note=f"no score model: run `ccpipe-geometry train {run}`"), ""
    return Geometry(atypicality=atyp, clusters=clusters, pairs_checked=checked, score_report=geometry.score_model_report(run)), ""
