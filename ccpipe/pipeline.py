"""The run: plan shards, read, resolve duplicate documents, line dedup, process, place.

Phases, each a map of a module-level function over picklable arguments, run by
whichever executor the config names; each finished unit leaves a marker, so a
rerun skips it, a killed run resumes where it stopped, and a task retried after
it finished returns at once:

1. ``read`` (per shard): parse the WET input once into a scratch copy, with every
   line's dedup key and every document's MinHash signature.
2. ``minhash_buckets`` / ``minhash_cluster``: near-duplicate clusters across the
   run (:mod:`ccpipe.steps.minhash`), one copy of each kept.
3. ``merge`` (per group of shards): the group's duplicated lines, among the
   documents that survive step 2 (:mod:`ccpipe.steps.dedup`).
4. ``process`` (per shard): the steps of :func:`build_steps`, then the rows.
5. ``cutoffs`` and ``finalize``: perplexity buckets calibrated on the run
   (:mod:`ccpipe.buckets`), when the perplexity step runs with ``calibration: run``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from ccpipe import buckets, dropped, faults, rundir, runinfo
from ccpipe.config import PipelineConfig
from ccpipe.errors import ConfigError
from ccpipe.executors import make_executor
from ccpipe.document import Document
from ccpipe.io import input_check
from ccpipe.io.dataset import DATA_DIR
from ccpipe.io.doc_cache import read_doc_cache, write_doc_cache
from ccpipe.io.inputs import Shard, plan_shards
from ccpipe.io.parquet import ShardWriter, output_schema, partition_label
from ccpipe.io.wet import read_input
from ccpipe.stats import Stats, merge_counters, write_json_atomic
from ccpipe.steps.base import Step, TaskContext, counted
from ccpipe.steps.dedup import LineDedup, LineHasher, group_files, merge_group, shard_hashes_dir
from ccpipe.steps.langid import LanguageId
from ccpipe.steps import minhash
from ccpipe.steps.perplexity import Perplexity
from ccpipe.steps.quality import GopherQuality
from ccpipe.steps.quality_score import QualityScore
from ccpipe.steps.ref_classifier import RefClassifier

LAYOUT_VERSION = 2
"""Bumped when what a run writes changes shape; a run of another layout is not resumed."""

log = logging.getLogger(__name__)


def build_steps(cfg: PipelineConfig) -> list[Step]:
    """The main pass, in order: duplicate documents out (one copy kept), CCNet's line
    dedup of the survivors, language id, perplexity, is-reference, Gopher rules."""
    steps: list[Step] = []
    if cfg.minhash.enabled:
        steps.append(minhash.MinHashFilter())
    if cfg.dedup.enabled:
        steps.append(LineDedup(keep_first=cfg.dedup.keep_first))
    steps.append(LanguageId(model=cfg.langid.model, threshold=cfg.langid.threshold, max_chars=cfg.langid.max_chars))
    # then CCNet's perplexity, LLaMA's is-reference score, Gopher's rules, quality_score
    for step in (Perplexity.from_config(cfg.perplexity), RefClassifier.from_config(cfg.ref),
                 GopherQuality.from_config(cfg.quality), QualityScore.from_config(cfg.quality_score)):
        if step is not None:
            steps.append(step)
    return steps


@dataclass(slots=True)
class RunSpec:
    """Everything a worker needs for one run; pickled with each task."""

    config: PipelineConfig
    out_dir: Path
    steps: list[Step]
    schema: pa.Schema
    run_key: str
    calibrate: bool = False
    """Perplexity buckets are placed after the run (cutoffs from the run's own values)."""
    reference_cutoffs: Path | None = None
    lsh: tuple[int, int] | None = None
    """MinHash (bands, rows), chosen once by the driver."""
    fault: faults.Fault | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def work_dir(self) -> Path:
        return self.out_dir / "_work"

    @property
    def data_dir(self) -> Path:
        return self.out_dir / DATA_DIR

    @property
    def scratch(self) -> bool:
        """The run reads its input in a pass of its own (line hashes, signatures)."""
        return self.config.dedup.enabled or self.config.minhash.enabled

    def read_dir(self, task_id: int) -> Path:
        return self.work_dir / "read" / f"task-{task_id:05d}"

    def shard_stats_path(self, task_id: int) -> Path:
        return self.out_dir / "stats" / "shards" / f"part-{task_id:05d}.json"

    def doc_cache(self, task_id: int) -> Path:
        return self.read_dir(task_id) / "documents.arrow"

    def read_stats_path(self, task_id: int) -> Path:
        return self.read_dir(task_id) / "read_stats.json"

    def read_marker(self, task_id: int) -> Path:
        return self.read_dir(task_id) / "DONE"

    def group_marker(self, group_id: int) -> Path:
        return self.work_dir / "line_hashes" / f"group-{group_id:05d}.done"

    def main_marker(self, task_id: int) -> Path:
        """The main pass's stats: final, or staged until the rows are placed in buckets."""
        if self.calibrate:
            return buckets.staged_stats_path(self.work_dir, task_id)
        return self.shard_stats_path(task_id)


# Steps unpickled in a worker are kept for the next task of the same run, so
# models load once per process rather than once per shard.
_WORKER_STEPS: dict[str, list[Step]] = {}


def _worker_steps(spec: RunSpec) -> list[Step]:
    steps = _WORKER_STEPS.get(spec.run_key)
    if steps is None:
        _WORKER_STEPS.clear()
        _WORKER_STEPS[spec.run_key] = steps = spec.steps
    return steps


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def read_task(args: tuple[RunSpec, Shard]) -> dict[str, Any]:
    """Read one shard once: a scratch copy of its documents, their line keys and
    their MinHash signatures."""
    spec, shard = args
    tid, cfg = shard.task_id, spec.config
    marker = spec.read_marker(tid)
    if marker.is_file():
        return json.loads(marker.read_text())
    faults.hit(spec.fault, "read", "start", tid)
    read_stats = Stats()
    hasher = LineHasher(cfg.dedup.keep_first) if cfg.dedup.enabled else None
    signer = minhash.make_signature_writer(cfg.minhash, spec.lsh) if cfg.minhash.enabled else None
    n = 0
    seconds = {"line_hash": 0.0, "sign": 0.0}
    clock = time.perf_counter
    for doc in write_doc_cache(spec.doc_cache(tid), read_input(shard.path, read_stats, shard.range, cfg.input, cfg.extract)):
        n += 1
        if hasher is not None:
            t0 = clock()
            hasher.add(doc)
            seconds["line_hash"] += clock() - t0
        if signer is not None:
            t0 = clock()
            signer.add(doc)
            seconds["sign"] += clock() - t0
    faults.hit(spec.fault, "read", "middle", tid)
    counters: dict[str, Any] = {"documents": n}
    t0 = clock()
    if hasher is not None:
        hasher.save(shard_hashes_dir(spec.work_dir, tid))
    seconds["line_hash"] += clock() - t0
    t0 = clock()
    if signer is not None:
        counters["minhash"] = signer.save(minhash.shard_dir(spec.work_dir, tid))
    seconds["sign"] += clock() - t0
    counters["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    read_stats.save(spec.read_stats_path(tid))
    write_json_atomic(marker, counters)
    faults.hit(spec.fault, "read", "done", tid)
    return {"docs": n}


def _read_shard(spec: RunSpec, shard: Shard, stats: Stats) -> Iterator[Document]:
    """The shard's documents, each with its position: from the read pass's scratch copy
    when the run has one (a shard redone after its copy was deleted reads its input
    again: the same documents in the same order)."""
    if spec.scratch and spec.doc_cache(shard.task_id).is_file():
        stats.merge(Stats.load(spec.read_stats_path(shard.task_id)))
        return read_doc_cache(spec.doc_cache(shard.task_id))

    def numbered() -> Iterator[Document]:
        for i, doc in enumerate(read_input(shard.path, stats, shard.range, spec.config.input, spec.config.extract)):
            doc.position = i
            yield doc

    return numbered()


def merge_task(args: tuple[RunSpec, int, list[Shard]]) -> dict[str, Any]:
    """The duplicated lines of one group of shards, among the documents MinHash keeps."""
    spec, group_id, shards = args
    marker = spec.group_marker(group_id)
    if marker.is_file():
        return json.loads(marker.read_text())
    faults.hit(spec.fault, "merge", "start", group_id)
    removed = None
    if spec.config.minhash.enabled:
        removed = []
        for s in shards:
            n = json.loads(spec.read_marker(s.task_id).read_text())["documents"]
            removed.append(minhash.removed_mask(spec.work_dir, s.task_id, n))
    dups, first = group_files(spec.work_dir, group_id)
    counters = merge_group([shard_hashes_dir(spec.work_dir, s.task_id) for s in shards], dups, first,
                           spec.config.dedup.keep_first, removed)
    counters["merge_peak_rss_bytes_max"] = _peak_rss_bytes()
    faults.hit(spec.fault, "merge", "middle", group_id)
    write_json_atomic(marker, counters)
    faults.hit(spec.fault, "merge", "done", group_id)
    return counters


def main_task(args: tuple[RunSpec, Shard]) -> dict[str, Any]:
    spec, shard = args
    tid = shard.task_id
    marker = spec.main_marker(tid)
    if marker.is_file() or spec.shard_stats_path(tid).is_file():  # done before a retry
        return {"docs": 0}
    faults.hit(spec.fault, "process", "start", tid)
    stats = Stats(shards=1)
    ctx = TaskContext(
        task_id=tid,
        work_dir=spec.work_dir,
        stats=stats,
        group_id=shard.group_id,
        index_in_group=shard.index_in_group,
        dropped=dropped.make_sink(spec, tid),
    )
    docs = _read_shard(spec, shard, stats)
    if spec.scratch:
        read = json.loads(spec.read_marker(tid).read_text())
    for step in _worker_steps(spec):
        stats.step(step.name)  # stats list steps in pipeline order
        step.prepare(ctx)
        docs = counted(step, docs, ctx)
    out = spec.config.output
    if spec.calibrate:
        writer = ShardWriter(buckets.stage_root(spec.work_dir), tid, spec.schema, fmt="arrow",
                             row_group_rows=out.row_group_rows)
        values: buckets.PerplexityValues | None = buckets.PerplexityValues()
    else:
        writer = ShardWriter(spec.data_dir, tid, spec.schema, out.compression, out.row_group_rows)
        values = None
    try:
        for doc in docs:
            writer.write(doc)
            if values is not None:
                values.add(doc)
            stats.docs_kept += 1
            stats.chars_kept += len(doc.raw_content)
            stats.by_language[partition_label(doc)] += 1
        writer.close()
        if ctx.dropped is not None:
            stats.counters.update(ctx.dropped.close())  # before the marker: a retry rewrites the same files
    except BaseException:
        writer.abort()
        if ctx.dropped is not None:
            ctx.dropped.abort()
        raise
    if values is not None:
        values.save(buckets.values_path(spec.work_dir, tid))
    faults.hit(spec.fault, "process", "middle", tid)
    if spec.scratch:
        if spec.config.dedup.enabled:
            stats.step("line_dedup").seconds += read["seconds"]["line_hash"]
        if spec.config.minhash.enabled:
            st = stats.step(minhash.STEP_NAME)
            st.seconds += read["seconds"]["sign"]
            merge_counters(st.counters, read["minhash"])
    stats.counters["worker_peak_rss_bytes_max"] = _peak_rss_bytes()
    stats.check()
    stats.save(marker)  # the shard's completion marker
    spec.doc_cache(tid).unlink(missing_ok=True)
    faults.hit(spec.fault, "process", "done", tid)
    return {"docs": stats.docs_read}


def _delete_run(out_dir: Path) -> None:
    """Delete what runs write in ``out_dir`` (work files, stats, embeddings, ``data/``, partition
    folders of ``part-*.parquet``); anything else a user put there stays."""
    for child in out_dir.iterdir():
        if child.is_symlink() or not child.is_dir():
            continue
        if child.name in ("_work", "stats", "_geometry", DATA_DIR, dropped.DROPPED_DIR) or all(
            f.is_file() and f.name.startswith("part-") and ".parquet" in f.name for f in child.iterdir()
        ):
            shutil.rmtree(child)


def _check_same_run(spec: RunSpec, shards: list[Shard], *, restart_if_changed: bool = False) -> None:
    """Refuse to mix a rerun with finished shards of a different config or input.

    With ``restart_if_changed`` a run of another config or input in the output
    directory is deleted instead, and this one starts from nothing.
    """
    record = {
        "config": spec.config.to_dict(),
        "shards": [[s.path, s.range.start, s.range.end] for s in shards],
        "steps": [s.name for s in spec.steps],
        "layout": LAYOUT_VERSION,
    }
    record["config"]["executor"] = None  # how it runs does not change what it makes
    rundir.strip_runtime_keys(record["config"])
    saved = rundir.load_record(spec.out_dir)
    if saved is not None:
        if saved == json.loads(json.dumps(record)):
            return
        if not restart_if_changed:
            raise ConfigError(
                f"{spec.out_dir} holds a run with another config or input; "
                "use a new output.dir (--out) or delete the old one to start over"
            )
        log.warning("%s holds a run with another config or input: deleting it and starting over", spec.out_dir)
        _delete_run(spec.out_dir)
    spec.work_dir.mkdir(parents=True, exist_ok=True)
    rundir.save_record(spec.out_dir, record)


def merge_stats(out_dir: Path, shards: list[Shard]) -> Stats:
    total = Stats()
    inputs = input_check.InputTally()
    for s in shards:
        shard_stats = Stats.load(out_dir / "stats" / "shards" / f"part-{s.task_id:05d}.json")
        inputs.add(s.path, shard_stats)
        total.merge(shard_stats)
    inputs.apply(total)  # names input files that gave nothing usable
    for marker in sorted((out_dir / "_work" / "line_hashes").glob("group-*.done")):
        merge_counters(total.step("line_dedup").counters, json.loads(marker.read_text()))
    if minhash.STEP_NAME in total.steps:
        merge_counters(total.step(minhash.STEP_NAME).counters, minhash.run_counters(out_dir / "_work"))
    total.check()
    return total


def _pending(ex, fn, items: list, desc: str, weights: list[float] | None = None) -> float:
    """Run ``fn`` over ``items``; the wall seconds it took."""
    t0 = time.perf_counter()
    for _ in ex.map(fn, items, desc=desc, weights=weights):
        pass
    return time.perf_counter() - t0


def run_pipeline(cfg: PipelineConfig, *, restart_if_changed: bool = False) -> Stats:
    """Run (or resume) the pipeline described by ``cfg``; returns the run's stats.

    ``restart_if_changed``: if the output directory holds a run of another config or
    input, delete it and start over (default: refuse with a :class:`ConfigError`).
    The output directory is locked for the run (a second run into it is refused,
    naming the first) and its ``_work`` scratch is deleted after success unless
    ``output.keep_work`` (``ccpipe.rundir``).
    """
    with rundir.claim(Path(cfg.output.dir).expanduser().resolve()) as out_dir:
        stats = _run_pipeline(cfg, restart_if_changed=restart_if_changed)
        rundir.finish(out_dir, keep_work=cfg.output.keep_work)
    return stats


def _run_pipeline(cfg: PipelineConfig, *, restart_if_changed: bool = False) -> Stats:
    started = time.time()
    out_dir = Path(cfg.output.dir).expanduser().resolve()
    steps = build_steps(cfg)
    if cfg.minhash.enabled:
        minhash.check_available()
    for step in steps:
        check = getattr(step, "check", None)
        if check:
            check()  # missing models fail here, before any work
    fields: dict[str, pa.DataType] = {}
    for step in steps:
        fields.update(step.output_fields)
    ppl = next((s for s in steps if isinstance(s, Perplexity)), None)
    shards = plan_shards(cfg.input, cfg.dedup.group_size)
    run_key = f"{out_dir}:{os.getpid()}"
    spec = RunSpec(cfg, out_dir, steps, output_schema(fields), run_key,
                   calibrate=ppl is not None and not ppl.assign_buckets,
                   reference_cutoffs=ppl.cutoffs_path if ppl is not None else None,
                   lsh=cfg.minhash.lsh() if cfg.minhash.enabled else None,
                   fault=faults.Fault.from_env(out_dir / "_work"))
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_same_run(spec, shards, restart_if_changed=restart_if_changed)
    if rundir.is_finished(out_dir):  # done, scratch deleted: nothing left to do
        log.info("%s holds this run, finished: nothing to do", out_dir)
        return Stats.load(out_dir / "stats" / "run.json")
    log.info("%d shard(s) from %d input file(s) -> %s", len(shards), len({s.path for s in shards}), out_dir)

    seconds: dict[str, float] = {}
    ids = [s.task_id for s in shards]
    with make_executor(cfg.executor) as ex:
        if spec.scratch:
            todo = [s for s in shards if not spec.read_marker(s.task_id).is_file()]
            seconds["read"] = _pending(ex, read_task, [(spec, s) for s in todo], "read", [s.size for s in todo])
        if cfg.minhash.enabled:
            seconds.update(minhash.run_phases(ex, cfg, out_dir, ids, spec.fault))
        if cfg.dedup.enabled:
            groups: dict[int, list[Shard]] = {}
            for s in shards:
                groups.setdefault(s.group_id, []).append(s)
            todo_g = [g for g in groups if not spec.group_marker(g).is_file()]
            seconds["merge"] = _pending(ex, merge_task, [(spec, g, groups[g]) for g in todo_g], "merge line hashes")
        todo = [s for s in shards if not spec.main_marker(s.task_id).is_file()
                and not spec.shard_stats_path(s.task_id).is_file()]
        if len(todo) < len(shards):
            log.info("resuming: %d of %d shards already done", len(shards) - len(todo), len(shards))
        seconds["process"] = _pending(ex, main_task, [(spec, s) for s in todo], "process", [s.size for s in todo])
        if spec.calibrate:
            if not buckets.cutoffs_json(out_dir).is_file():
                seconds["cutoffs"] = _pending(ex, buckets.cutoffs_task, [(spec, ids)], "perplexity cutoffs")
            todo_f = [t for t in ids if not spec.shard_stats_path(t).is_file()]
            seconds["finalize"] = _pending(ex, buckets.finalize_task, [(spec, t) for t in todo_f], "place in buckets")

    stats = merge_stats(out_dir, shards)
    for phase, sec in seconds.items():
        stats.counters[f"wall_seconds_{phase}"] = round(sec, 3)
    stats.save(out_dir / "stats" / "run.json")
    runinfo.save(out_dir, cfg, started, seconds)
    input_check.report(stats)  # raises when no input yielded a record
    return stats
