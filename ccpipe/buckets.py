"""Perplexity buckets calibrated on the run itself (CCNet's head / middle / tail).

CCNet cuts each language at the p30 and p60 of its perplexity over web pages.
Cutoffs taken from the LM's own training text (edited prose) put nearly every web
page in one bucket, so by default (``perplexity.calibration: run``) a run takes
each language's percentiles over its own kept documents:

1. the main pass stages each shard's rows (LZ4 Arrow IPC under
   ``<out>/_work/stage/``) and saves the perplexities it wrote
   (``<out>/_work/perplexity/task-NNNNN.npz``);
2. one task (:func:`cutoffs_task`) computes every language's p0..p99 and saves
   them as ``<out>/stats/cutoffs.json`` and a CCNet-layout ``stats/cutoff.csv``;
3. a finalize task per shard (:func:`finalize_task`) writes each row into its
   bucket's partition, ``<out>/data/language=<lang>/bucket=<bucket>/``.

Sampling: each value carries a 64-bit hash of its document id, and a shard's
values are stored sorted by that hash. When a language has more than
``calibration_sample`` scored documents in the run, its percentiles come from the
documents whose hash lies below ``sample / n * 2**64``: a deterministic, uniform
sample that is a prefix of every shard's array, so the cutoff task never holds
more than the sample.

A language with fewer than ``min_calibration_docs`` scored documents in the run
takes the reference table's cutoffs (``perplexity.cutoffs``, CCNet's
``cutoff.csv`` layout) when that table has the language, else the run's own.
``perplexity.calibration: reference`` buckets every document with the reference
table in the main pass, as CCNet did, and skips both extra phases.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ccpipe.document import Document
from ccpipe.io.dataset import partition_path
from ccpipe.io.parquet import shard_file_name
from ccpipe.stats import Stats, write_json_atomic
from ccpipe.steps.perplexity import NO_MODEL_BUCKET, load_cutoffs, save_cutoffs

log = logging.getLogger(__name__)

STAGE = "stage"
_BUCKETS = ("head", "middle", "tail", NO_MODEL_BUCKET)


def stage_root(work_dir: Path) -> Path:
    return Path(work_dir) / STAGE


def staged_stats_path(work_dir: Path, task_id: int) -> Path:
    """A shard's main-pass stats, kept here until its rows are placed in buckets."""
    return stage_root(work_dir) / "stats" / f"part-{task_id:05d}.json"


def values_path(work_dir: Path, task_id: int) -> Path:
    return Path(work_dir) / "perplexity" / f"task-{task_id:05d}.npz"


def cutoffs_json(out_dir: Path) -> Path:
    return Path(out_dir) / "stats" / "cutoffs.json"


def id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class PerplexityValues:
    """The perplexities of a shard's written documents, by language."""

    def __init__(self) -> None:
        self._by_lang: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))

    def add(self, doc: Document) -> None:
        pp = doc.extras.get("perplexity")
        if pp is None:
            return
        hashes, values = self._by_lang[doc.language or "unknown"]
        hashes.append(id_hash(doc.id))
        values.append(pp)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for lang, (hashes, values) in self._by_lang.items():
            h = np.asarray(hashes, np.uint64)
            order = np.argsort(h, kind="stable")
            arrays[f"{lang}.hash"] = h[order]
            arrays[f"{lang}.pp"] = np.asarray(values, np.float64)[order]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)


def _languages(files: list[Path]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for f in files:
        with np.load(f) as z:
            for key in z.files:
                if key.endswith(".hash"):
                    counts[key[: -len(".hash")]] += int(z[key].size)
    return dict(counts)


def compute_cutoffs(work_dir: Path, task_ids: list[int], *, sample: int, min_docs: int,
                    reference: dict[str, list[float]] | None) -> dict[str, dict[str, Any]]:
    """``{language: {"percentiles": [p0..p99], "source": "run"|"reference", "docs": n, "sampled": m}}``."""
    files = [values_path(work_dir, t) for t in task_ids if values_path(work_dir, t).is_file()]
    counts = _languages(files)
    out: dict[str, dict[str, Any]] = {}
    for lang in sorted(counts):
        n = counts[lang]
        if n < min_docs and reference and lang in reference:
            out[lang] = {"percentiles": [float(v) for v in reference[lang]], "source": "reference", "docs": n, "sampled": 0}
            continue
        limit = None if n <= sample else np.uint64(min(2**64 - 1, int(sample / n * 2**64)))
        parts = []
        for f in files:
            with np.load(f) as z:
                if f"{lang}.hash" not in z.files:
                    continue
                values = z[f"{lang}.pp"]
                if limit is not None:
                    values = values[: int(np.searchsorted(z[f"{lang}.hash"], limit))]
                parts.append(values)
        vals = np.concatenate(parts) if parts else np.zeros(0)
        if vals.size == 0:  # a sample of a huge language can miss everything only in theory
            continue
        pct = np.percentile(vals, np.arange(100))
        out[lang] = {"percentiles": [float(v) for v in pct], "source": "run", "docs": n, "sampled": int(vals.size)}
    return out


def cutoffs_task(args: tuple[Any, list[int]]) -> dict[str, Any]:
    """Compute and save the run's cutoffs (one task; idempotent)."""
    from ccpipe import faults

    spec, task_ids = args
    path = cutoffs_json(spec.out_dir)
    if path.is_file():
        return {"languages": len(json.loads(path.read_text())["languages"])}
    faults.hit(spec.fault, "cutoffs", "start", 0)
    pcfg = spec.config.perplexity
    reference = None
    ref_path = spec.reference_cutoffs
    if ref_path is not None and Path(ref_path).is_file():
        reference = load_cutoffs(Path(ref_path))
    table = compute_cutoffs(spec.work_dir, task_ids, sample=pcfg.calibration_sample,
                            min_docs=pcfg.min_calibration_docs, reference=reference)
    if table:
        save_cutoffs({lang: v["percentiles"] for lang, v in table.items()}, path.parent / "cutoff.csv")
    faults.hit(spec.fault, "cutoffs", "middle", 0)
    write_json_atomic(path, {
        "head_percentile": pcfg.head_percentile,
        "middle_percentile": pcfg.middle_percentile,
        "reference": str(ref_path) if reference else None,
        "languages": table,
    })
    faults.hit(spec.fault, "cutoffs", "done", 0)
    return {"languages": len(table)}


def load_run_cutoffs(out_dir: Path) -> dict[str, list[float]]:
    data = json.loads(cutoffs_json(out_dir).read_text())
    return {lang: v["percentiles"] for lang, v in data["languages"].items()}


def bucket_array(pp: np.ndarray, cutoffs: list[float] | None, head: int, middle: int) -> np.ndarray:
    """:func:`~ccpipe.steps.perplexity.bucket_of` of each value (NaN: no score)."""
    out = np.full(pp.shape, NO_MODEL_BUCKET, dtype=object)
    if cutoffs is None:
        return out
    scored = ~np.isnan(pp)
    out[scored] = np.where(pp[scored] < cutoffs[head], "head", np.where(pp[scored] < cutoffs[middle], "middle", "tail"))
    return out


def finalize_task(args: tuple[Any, int]) -> dict[str, Any]:
    """Place one shard's staged rows in their buckets; its final stats mark it done."""
    from ccpipe import faults

    spec, task_id = args
    final = spec.shard_stats_path(task_id)
    if final.is_file():
        return {"docs": 0}
    faults.hit(spec.fault, "finalize", "start", task_id)
    pcfg = spec.config.perplexity
    cutoffs = load_run_cutoffs(spec.out_dir)
    stats = Stats.load(staged_stats_path(spec.work_dir, task_id))
    counters = stats.step("perplexity").counters
    root = stage_root(spec.work_dir)
    name = shard_file_name(task_id, "arrow")
    staged = sorted(p for p in root.glob(f"language=*/{name}"))
    out = spec.config.output
    compression = None if out.compression == "none" else out.compression
    n = 0
    for i, src in enumerate(staged):
        lang = src.parent.name.split("=", 1)[1]
        with pa.memory_map(str(src), "r") as f:
            table = pa.ipc.open_file(f).read_all()
        pp = table.column("perplexity").to_numpy(zero_copy_only=False)
        buckets = bucket_array(pp.astype(np.float64), cutoffs.get(lang), pcfg.head_percentile, pcfg.middle_percentile)
        label_before = lang
        for bucket in _BUCKETS:
            mask = buckets == bucket
            rows = int(mask.sum())
            if not rows:
                continue
            part = table.filter(pa.array(mask))
            dest = spec.data_dir / partition_path(lang, bucket) / shard_file_name(task_id)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            pq.write_table(part, tmp, compression=compression, row_group_size=out.row_group_rows)
            os.replace(tmp, dest)
            counters[f"bucket_{bucket}"] += rows
            stats.by_language[f"{lang}_{bucket}"] += rows
            n += rows
        stats.by_language[label_before] -= table.num_rows
        if stats.by_language[label_before] == 0:
            del stats.by_language[label_before]
        if i == 0:
            faults.hit(spec.fault, "finalize", "middle", task_id)
    stats.check()
    stats.save(final)
    faults.hit(spec.fault, "finalize", "done", task_id)
    for src in staged:
        src.unlink(missing_ok=True)
    staged_stats_path(spec.work_dir, task_id).unlink(missing_ok=True)
    return {"docs": n}
