"""Dropped documents kept for audits, bounded: what a step removed, and why.

Every document a step of the main pass drops is seen here (through
:func:`ccpipe.steps.base.counted`, so no step needs to know), and per shard two
files land under ``<out>/dropped/``:

- ``docs/part-NNNNN.parquet``: the dropped documents themselves, with the
  document's fields (as the step saw it: the text after line dedup for a later
  step) plus ``drop_step``, ``drop_reason``, ``drop_value`` (the number that
  caused the drop, when there is one: the language-id score, the Gopher rule's
  measured value, the quality or is-reference score, the MinHash cluster size)
  and ``drop_detail`` (one readable sentence: "language de, score 0.31 <
  threshold 0.5", "gopher_dup_lines: 0.42 > 0.3", "near duplicate of
  <urn:...> (cluster of 3)"), ``dup_cluster_id`` and ``dup_kept_id`` for
  MinHash drops. With ``output.keep_dropped: sample`` (the default) these are
  the first ``output.dropped_per_reason`` documents of each (step, reason) in
  the shard, in input order; with ``all`` every dropped document; with
  ``none`` nothing is written.
- ``cluster_kept/part-NNNNN.parquet``: ``id`` and ``raw_content`` of the kept member
  of a MinHash cluster as MinHash saw it (before line dedup strips the lines it
  shares with its removed copies), the first ``dropped_per_reason`` per shard (all
  with ``all``), so the audit can show a kept member beside a removed one.
- ``summary/part-NNNNN.parquet``: one small row per dropped document, always
  all of them (``sample`` and ``all``): ``source_domain``, ``length``,
  ``nlines``, ``drop_step``, ``drop_reason``, ``drop_value``, no text. The
  audit's per-domain table and length histograms of dropped documents read it,
  so they are exact whatever the sample size.

Both are written under temporary names and renamed before the shard's completion
marker, and both depend only on the shard's documents in input order, so a
task killed and retried, a resumed run, and either executor write the same
files. Unparsable records (``errored`` in the stats) are not documents and are
not here; the stats name them by reason and the input files that had problems.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from ccpipe.document import Document
from ccpipe.io.dataset import DROPPED_DIR

DROP_FIELDS: dict[str, pa.DataType] = {
    "drop_step": pa.string(),
    "drop_reason": pa.string(),
    "drop_value": pa.float64(),
    "drop_detail": pa.string(),
    "dup_kept_id": pa.string(),
}
SUMMARY_SCHEMA = pa.schema([
    ("source_domain", pa.string()),
    ("length", pa.int64()),
    ("nlines", pa.int64()),
    ("drop_step", pa.string()),
    ("drop_reason", pa.string()),
    ("drop_value", pa.float64()),
])
MODES = ("sample", "all", "none")


def docs_path(out_dir: Path, task_id: int) -> Path:
    return Path(out_dir) / DROPPED_DIR / "docs" / f"part-{task_id:05d}.parquet"


def summary_path(out_dir: Path, task_id: int) -> Path:
    return Path(out_dir) / DROPPED_DIR / "summary" / f"part-{task_id:05d}.parquet"


def cluster_kept_path(out_dir: Path, task_id: int) -> Path:
    return Path(out_dir) / DROPPED_DIR / "cluster_kept" / f"part-{task_id:05d}.parquet"


def docs_schema(row_schema: pa.Schema) -> pa.Schema:
    """The run's row columns (``language`` included, it is a plain column here) plus the drop's."""
    schema = row_schema
    for name, tp in DROP_FIELDS.items():
        if name not in schema.names:
            schema = schema.append(pa.field(name, tp))
    return schema


def _fmt(x: float) -> str:
    return f"{x:.4g}"


class _Explainer:
    """The value that caused a drop and a sentence saying why, per step."""

    def __init__(self, work_dir: Path, task_id: int) -> None:
        self.work_dir = work_dir
        self.task_id = task_id
        self._members: dict[int, tuple[int, int]] | None = None
        self._ids: dict[int, list[str]] = {}

    def _minhash(self, doc: Document) -> tuple[float | None, str, dict[str, Any]]:
        from ccpipe.steps import minhash

        if self._members is None:
            seq, cid, size = minhash.cluster_members(self.work_dir, self.task_id)
            self._members = {int(s): (int(c), int(n)) for s, c, n in zip(seq.tolist(), cid.tolist(), size.tolist())}
        cluster, size = self._members.get(doc.position, (-1, 0))
        kept_id = None
        if cluster >= 0:
            task, seq = cluster >> 32, cluster & 0xFFFFFFFF
            if task not in self._ids:
                path = minhash.shard_dir(self.work_dir, task) / "ids.arrow"
                self._ids[task] = feather.read_table(path).column("id").to_pylist() if path.is_file() else []
            ids = self._ids[task]
            kept_id = ids[seq] if seq < len(ids) else None
        detail = f"near duplicate of {kept_id or cluster} (cluster of {size}, one member kept)"
        return float(size), detail, {"dup_cluster_id": cluster, "dup_kept_id": kept_id}

    def explain(self, step: Any, reason: str, doc: Document) -> tuple[float | None, str, dict[str, Any]]:
        name = step.name
        if name == "minhash":
            return self._minhash(doc)
        if name == "lang_id" and doc.language_score is not None:
            s = float(doc.language_score)
            return s, f"language {doc.language}, score {_fmt(s)} < threshold {_fmt(step.threshold)}", {}
        if name == "line_dedup":
            if reason == "empty":
                return None, "no text", {}
            return float(doc.nlines), f"all {doc.nlines} lines occur in another document of the shard group", {}
        if name == "quality" and hasattr(step, "measure"):
            got = step.measure(doc.raw_content, doc.language, reason)
            if got is not None:
                return float(got[0]), f"{reason}: {_fmt(got[0])} {got[1]}", {}
            return None, reason, {}
        col, limit_attr = _SCORES.get(name, (None, None))
        if col is not None and doc.extras.get(col) is not None and hasattr(step, limit_attr):
            s = float(doc.extras[col])
            return s, f"{col} {_fmt(s)} < {_fmt(float(getattr(step, limit_attr)))}", {}
        return None, reason, {}


# steps that drop below a score: the column the score is in and the step's limit
_SCORES = {"quality_score": ("quality_score", "drop_below"), "ref_classifier": ("ref_score", "threshold")}


class DropSink:
    """One shard's dropped documents: a bounded sample with reasons and an all-rows summary."""

    def __init__(self, *, out_dir: Path, work_dir: Path, task_id: int, row_schema: pa.Schema, mode: str,
                 per_reason: int, compression: str = "zstd", flush_rows: int = 2000) -> None:
        if mode not in MODES:
            raise ValueError(f"keep_dropped must be one of {MODES}, got {mode!r}")
        self.out_dir, self.task_id, self.mode, self.per_reason = Path(out_dir), task_id, mode, per_reason
        self.schema = docs_schema(row_schema)
        self.compression = None if compression == "none" else compression
        self.flush_rows = flush_rows
        self.seen: Counter = Counter()
        self._explainer = _Explainer(work_dir, task_id)
        self._rows: list[dict[str, Any]] = []
        self._summary: dict[str, list] = {f.name: [] for f in SUMMARY_SCHEMA}
        self._writer: pq.ParquetWriter | None = None
        self.docs_written = 0
        self._cluster_kept: dict[str, list] = {"id": [], "raw_content": []}

    def passed(self, step: Any, doc: Document) -> None:
        """``step`` kept ``doc``: a MinHash cluster's kept member is recorded as MinHash saw it."""
        if step.name == "minhash" and (doc.extras.get("dup_cluster_size") or 1) > 1:
            ck = self._cluster_kept
            if self.mode == "all" or len(ck["id"]) < self.per_reason:
                ck["id"].append(doc.id)
                ck["raw_content"].append(doc.raw_content)

    def add(self, step: Any, reason: str, doc: Document) -> None:
        """Record that ``step`` dropped ``doc`` for ``reason``."""
        key = (step.name, reason)
        self.seen[key] += 1
        sampled = self.mode == "all" or self.seen[key] <= self.per_reason
        # the summary has every drop's value too, except a Gopher rule's (measured again: sampled only)
        value, detail, more = (self._explainer.explain(step, reason, doc) if sampled or step.name != "quality"
                               else (None, "", {}))
        s = self._summary
        s["source_domain"].append(doc.source_domain)
        s["length"].append(doc.length)
        s["nlines"].append(doc.nlines)
        s["drop_step"].append(step.name)
        s["drop_reason"].append(reason)
        s["drop_value"].append(value)
        if not sampled:
            return
        row = {n: getattr(doc, n) for n in Document.__slots__ if n in self.schema.names}
        row.update({n: doc.extras.get(n) for n in self.schema.names if n in doc.extras})
        row.update(more, drop_step=step.name, drop_reason=reason, drop_value=value, drop_detail=detail)
        self._rows.append(row)
        if len(self._rows) >= self.flush_rows:
            self._flush()

    def _tmp(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f".{path.name}.tmp-{os.getpid()}")

    def _flush(self) -> None:
        if not self._rows:
            return
        cols = {f.name: [r.get(f.name) for r in self._rows] for f in self.schema}
        table = pa.Table.from_pydict(cols, schema=self.schema)
        if self._writer is None:
            self._docs_tmp = self._tmp(docs_path(self.out_dir, self.task_id))
            self._writer = pq.ParquetWriter(self._docs_tmp, self.schema, compression=self.compression)
        self._writer.write_table(table)
        self.docs_written += len(self._rows)
        self._rows = []

    def close(self) -> dict[str, int]:
        """Write both files into place; the counters for the shard's stats."""
        self._flush()
        written = []
        if self._writer is not None:
            self._writer.close()
            dest = docs_path(self.out_dir, self.task_id)
            os.replace(self._docs_tmp, dest)
            written.append(dest)
        if self._cluster_kept["id"]:
            dest = cluster_kept_path(self.out_dir, self.task_id)
            tmp = self._tmp(dest)
            pq.write_table(pa.table(self._cluster_kept, schema=pa.schema([("id", pa.string()), ("raw_content", pa.large_string())])),
                           tmp, compression=self.compression)
            os.replace(tmp, dest)
            written.append(dest)
        if self._summary["drop_step"]:
            dest = summary_path(self.out_dir, self.task_id)
            tmp = self._tmp(dest)
            pq.write_table(pa.Table.from_pydict(self._summary, schema=SUMMARY_SCHEMA), tmp, compression=self.compression)
            os.replace(tmp, dest)
            written.append(dest)
        return {"dropped_docs_kept": self.docs_written,
                "dropped_docs_summarized": len(self._summary["drop_step"]),
                "dropped_bytes": sum(p.stat().st_size for p in written)}

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - best effort on the error path
                pass
            self._docs_tmp.unlink(missing_ok=True)


def make_sink(spec: Any, task_id: int) -> DropSink | None:
    """The shard's sink for ``spec`` (a :class:`ccpipe.pipeline.RunSpec`), None with ``keep_dropped: none``."""
    out = spec.config.output
    if out.keep_dropped == "none":
        return None
    # the perplexity step's ``bucket`` is placed after the run: a dropped document has none
    return DropSink(out_dir=spec.out_dir, work_dir=spec.work_dir, task_id=task_id, row_schema=spec.schema,
                    mode=out.keep_dropped, per_reason=out.dropped_per_reason, compression=out.compression)
