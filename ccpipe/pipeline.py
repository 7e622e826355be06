"""The run: plan shards, hash lines, merge hash groups, process shards, merge stats.

Every phase is a map of a module-level function over picklable arguments, run by
whichever executor the config names; each finished unit leaves a marker, so a
rerun skips it and a killed run resumes where it stopped.
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

from ccpipe.config import PipelineConfig
from ccpipe.errors import ConfigError
from ccpipe.executors import make_executor
from ccpipe.document import Document
from ccpipe.io.doc_cache import read_doc_cache, write_doc_cache
from ccpipe.io.inputs import Shard, plan_shards
from ccpipe.io.parquet import ShardWriter, output_schema, partition_of
from ccpipe.io.wet import read_wet
from ccpipe.stats import Stats, merge_counters, write_json_atomic
from ccpipe.steps.base import Step, TaskContext, counted
from ccpipe.steps.dedup import LineDedup, group_files, hash_documents, merge_group, shard_hashes_dir
from ccpipe.steps.langid import LanguageId
from ccpipe.steps import minhash
from ccpipe.steps.perplexity import Perplexity
from ccpipe.steps.quality import GopherQuality
from ccpipe.steps.quality_score import QualityScore
from ccpipe.steps.ref_classifier import RefClassifier

log = logging.getLogger(__name__)


def build_steps(cfg: PipelineConfig) -> list[Step]:
    """The main pass, in CCNet's order. Line dedup must stay first: it matches
    documents to the hashing pass by their position in the shard."""
    steps: list[Step] = []
    if cfg.dedup.enabled:
        steps.append(LineDedup(keep_first=cfg.dedup.keep_first))
    steps.append(LanguageId(model=cfg.langid.model, threshold=cfg.langid.threshold, max_chars=cfg.langid.max_chars))
    # then CCNet's perplexity buckets, LLaMA's is-reference score, Gopher's rules, quality_score
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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def work_dir(self) -> Path:
        return self.out_dir / "_work"

    def shard_stats_path(self, task_id: int) -> Path:
        return self.out_dir / "stats" / "shards" / f"part-{task_id:05d}.json"

    def doc_cache(self, task_id: int) -> Path:
        return shard_hashes_dir(self.work_dir, task_id).directory / "documents.arrow"

    def read_stats_path(self, task_id: int) -> Path:
        return shard_hashes_dir(self.work_dir, task_id).directory / "read_stats.json"

    def hash_marker(self, task_id: int) -> Path:
        return shard_hashes_dir(self.work_dir, task_id).directory / "DONE"

    def group_marker(self, group_id: int) -> Path:
        return self.work_dir / "line_hashes" / f"group-{group_id:05d}.done"

    def main_marker(self, task_id: int) -> Path:
        """The main pass's stats: final, or staged until MinHash finalizes the shard."""
        if self.config.minhash.enabled:
            return minhash.staged_stats_path(self.work_dir, task_id)
        return self.shard_stats_path(task_id)

    @property
    def parquet_dir(self) -> Path:
        """Where the main pass writes parquet: staged while MinHash must still cluster."""
        return minhash.stage_dir(self.work_dir) if self.config.minhash.enabled else self.out_dir


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


def hash_task(args: tuple[RunSpec, Shard]) -> dict[str, Any]:
    """Pass 1 of line dedup for one shard; also keeps the parsed documents."""
    spec, shard = args
    read_stats = Stats()
    out = shard_hashes_dir(spec.work_dir, shard.task_id)
    docs = write_doc_cache(spec.doc_cache(shard.task_id), read_wet(shard.path, read_stats, shard.range))
    counters = hash_documents(docs, out, shard.index_in_group, spec.config.dedup.keep_first)
    read_stats.save(spec.read_stats_path(shard.task_id))
    write_json_atomic(spec.hash_marker(shard.task_id), counters)
    return {"docs": counters["documents"]}


def _read_shard(spec: RunSpec, shard: Shard, stats: Stats) -> Iterator[Document]:
    """The shard's documents: from pass 1's scratch copy when there is one."""
    cache = spec.doc_cache(shard.task_id)
    if cache.is_file() and spec.read_stats_path(shard.task_id).is_file():
        stats.merge(Stats.load(spec.read_stats_path(shard.task_id)))
        return read_doc_cache(cache)
    return read_wet(shard.path, stats, shard.range)


def merge_task(args: tuple[RunSpec, int, list[Shard]]) -> dict[str, Any]:
    spec, group_id, shards = args
    dups, first = group_files(spec.work_dir, group_id)
    counters = merge_group(
        [shard_hashes_dir(spec.work_dir, s.task_id) for s in shards], dups, first, spec.config.dedup.keep_first
    )
    counters["merge_peak_rss_bytes_max"] = _peak_rss_bytes()
    write_json_atomic(spec.group_marker(group_id), counters)
    return counters


def main_task(args: tuple[RunSpec, Shard]) -> dict[str, Any]:
    spec, shard = args
    stats = Stats(shards=1)
    ctx = TaskContext(
        task_id=shard.task_id,
        work_dir=spec.work_dir,
        stats=stats,
        group_id=shard.group_id,
        index_in_group=shard.index_in_group,
    )
    docs = _read_shard(spec, shard, stats)
    for step in _worker_steps(spec):
        stats.step(step.name)  # stats list steps in pipeline order
        step.prepare(ctx)
        docs = counted(step, docs, ctx)
    out = spec.config.output
    writer = ShardWriter(spec.parquet_dir, shard.task_id, spec.schema, out.compression, out.row_group_rows)
    try:
        for doc in docs:
            writer.write(doc)
            stats.docs_kept += 1
            stats.chars_kept += len(doc.raw_content)
            stats.by_language[partition_of(doc)] += 1
        writer.close()
    except BaseException:
        writer.abort()
        raise
    if spec.config.dedup.enabled:
        hashed = json.loads(spec.hash_marker(shard.task_id).read_text())
        stats.step("line_dedup").counters["unique_lines_in_shard"] += hashed["unique_lines_in_shard"]
    stats.counters["worker_peak_rss_bytes_max"] = _peak_rss_bytes()
    stats.check()
    stats.save(spec.main_marker(shard.task_id))  # the shard's completion marker
    spec.doc_cache(shard.task_id).unlink(missing_ok=True)
    return {"docs": stats.docs_read}


def _delete_run(out_dir: Path) -> None:
    """Delete what runs write in ``out_dir`` (work files, stats, embeddings, partition
    folders of ``part-*.parquet``); anything else a user put there stays."""
    for child in out_dir.iterdir():
        if child.is_symlink() or not child.is_dir():
            continue
        if child.name in ("_work", "stats", "_geometry") or all(
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
    }
    record["config"]["executor"] = None  # how it runs does not change what it makes
    record["config"]["output"].pop("dir", None)
    path = spec.work_dir / "run.json"
    if path.is_file():
        if json.loads(path.read_text()) == json.loads(json.dumps(record)):
            return
        if not restart_if_changed:
            raise ConfigError(
                f"{spec.out_dir} holds a run with another config or input; "
                "use a new output.dir (--out) or delete the old one to start over"
            )
        log.warning("%s holds a run with another config or input: deleting it and starting over", spec.out_dir)
        _delete_run(spec.out_dir)
    spec.work_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


def merge_stats(out_dir: Path, shards: list[Shard]) -> Stats:
    total = Stats()
    for s in shards:
        total.merge(Stats.load(out_dir / "stats" / "shards" / f"part-{s.task_id:05d}.json"))
    for marker in sorted((out_dir / "_work" / "line_hashes").glob("group-*.done")):
        merge_counters(total.step("line_dedup").counters, json.loads(marker.read_text()))
    if minhash.STEP_NAME in total.steps:
        merge_counters(total.step(minhash.STEP_NAME).counters, minhash.run_counters(out_dir / "_work"))
    total.check()
    return total


def run_pipeline(cfg: PipelineConfig, *, restart_if_changed: bool = False) -> Stats:
    """Run (or resume) the pipeline described by ``cfg``; returns the run's stats.

    ``restart_if_changed``: if the output directory holds a run of another config or
    input, delete it and start over (default: refuse with a :class:`ConfigError`).
    """
    out_dir = Path(cfg.output.dir).expanduser().resolve()
    steps = build_steps(cfg)
    if cfg.minhash.enabled:
        steps.append(minhash.make_signature_step(cfg.minhash))  # last: it records output order
    for step in steps:
        check = getattr(step, "check", None)
        if check:
            check()  # missing models fail here, before any work
    fields: dict[str, pa.DataType] = {}
    for step in steps:
        fields.update(step.output_fields)
    shards = plan_shards(cfg.input, cfg.dedup.group_size)
    run_key = f"{out_dir}:{os.getpid()}"
    spec = RunSpec(cfg, out_dir, steps, output_schema(fields), run_key)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_same_run(spec, shards, restart_if_changed=restart_if_changed)
    log.info("%d shard(s) from %d input file(s) -> %s", len(shards), len({s.path for s in shards}), out_dir)

    seconds: dict[str, float] = {}
    with make_executor(cfg.executor) as ex:
        if cfg.dedup.enabled:
            t0 = time.perf_counter()
            todo = [s for s in shards if not spec.hash_marker(s.task_id).is_file()]
            for _ in ex.map(hash_task, [(spec, s) for s in todo], desc="hash lines", weights=[s.size for s in todo]):
                pass
            groups: dict[int, list[Shard]] = {}
            for s in shards:
                groups.setdefault(s.group_id, []).append(s)
            t1 = time.perf_counter()
            todo_g = [g for g in groups if not spec.group_marker(g).is_file()]
            for _ in ex.map(merge_task, [(spec, g, groups[g]) for g in todo_g], desc="merge hashes"):
                pass
            t2 = time.perf_counter()
            seconds.update(hash=t1 - t0, merge=t2 - t1)
        t0 = time.perf_counter()
        todo = [s for s in shards if not spec.main_marker(s.task_id).is_file()]
        if len(todo) < len(shards):
            log.info("resuming: %d of %d shards already done", len(shards) - len(todo), len(shards))
        for _ in ex.map(main_task, [(spec, s) for s in todo], desc="process", weights=[s.size for s in todo]):
            pass
        seconds["process"] = time.perf_counter() - t0
        if cfg.minhash.enabled:
            seconds.update(minhash.run_phases(ex, cfg, out_dir, [s.task_id for s in shards], spec.shard_stats_path))

    stats = merge_stats(out_dir, shards)
    for phase, sec in seconds.items():
        stats.counters[f"wall_seconds_{phase}"] = round(sec, 3)
    stats.save(out_dir / "stats" / "run.json")
    return stats
