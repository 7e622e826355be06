"""Line-level deduplication with CCNet's semantics, as a two-pass shuffle.

Pass 1 (``hash_task``, one per shard): hash every line of every document and
save the shard's line keys (in order) plus its sorted unique keys, flagged when a
key occurs twice or more inside the shard.

Merge (``merge_group``, one per group of shards): a key is a duplicate when it
occurs twice or more anywhere in the group: in two shards, or twice in one.
The group's duplicate keys are saved sorted, so pass 2 looks them up with a
binary search on a memory-mapped array that all workers share through the page
cache.

Pass 2 (:class:`LineDedup`, the first step of the main pass): remove every line
whose key is a duplicate (CCNet: including its first occurrence), or, with
``keep_first``, every occurrence but the first in the group's shard order.
Documents left without lines are dropped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ccpipe.document import Document
from ccpipe.errors import CcpipeError
from ccpipe.steps.base import Step, TaskContext
from ccpipe.text import line_hashes

log = logging.getLogger(__name__)

# First-occurrence positions are packed into one uint64 so that integer order is
# (shard in group, document in shard, line in document) order.
_TASK_BITS, _DOC_BITS, _LINE_BITS = 20, 24, 20
_NO_POSITION = np.uint64(np.iinfo(np.uint64).max)


def pack_positions(task_in_group: int, doc_idx: np.ndarray, line_idx: np.ndarray) -> np.ndarray:
    if task_in_group >= 1 << _TASK_BITS:
        raise CcpipeError(f"a dedup group holds at most {1 << _TASK_BITS} shards")
    doc = np.minimum(doc_idx.astype(np.uint64), (1 << _DOC_BITS) - 1)
    line = np.minimum(line_idx.astype(np.uint64), (1 << _LINE_BITS) - 1)
    return (
        (np.uint64(task_in_group) << np.uint64(_DOC_BITS + _LINE_BITS))
        | (doc << np.uint64(_LINE_BITS))
        | line
    )


@dataclass(slots=True)
class ShardHashes:
    """Files of pass 1 for one shard."""

    directory: Path

    @property
    def keys(self) -> Path:  # every line key, in document order
        return self.directory / "line_keys.npy"

    @property
    def lines_per_doc(self) -> Path:
        return self.directory / "lines_per_doc.npy"

    @property
    def unique(self) -> Path:  # sorted unique keys of the shard
        return self.directory / "unique_keys.npy"

    @property
    def repeated(self) -> Path:  # sorted keys seen twice or more inside the shard
        return self.directory / "repeated_keys.npy"

    @property
    def first_pos(self) -> Path:  # packed first position of each unique key
        return self.directory / "first_positions.npy"


def shard_hashes_dir(work_dir: Path, task_id: int) -> ShardHashes:
    return ShardHashes(Path(work_dir) / "line_hashes" / f"task-{task_id:05d}")


def group_files(work_dir: Path, group_id: int) -> tuple[Path, Path]:
    d = Path(work_dir) / "line_hashes"
    return d / f"group-{group_id:05d}.dups.npy", d / f"group-{group_id:05d}.first.npy"


def _save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def hash_documents(docs: Iterable[Document], out: ShardHashes, task_in_group: int, keep_first: bool) -> dict[str, int]:
    """Pass 1 for one shard. Returns counters (documents, lines, unique keys, bytes)."""
    chunks: list[np.ndarray] = []
    counts: list[int] = []
    for doc in docs:
        lines = doc.raw_content.split("\n")
        chunks.append(line_hashes(lines))
        counts.append(len(lines))
    keys = np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)
    per_doc = np.asarray(counts, dtype=np.uint32)
    uniq, first_idx, n = np.unique(keys, return_index=True, return_counts=True)
    out.directory.mkdir(parents=True, exist_ok=True)
    if keep_first:
        doc_of_line = np.repeat(np.arange(len(per_doc), dtype=np.int64), per_doc)
        starts = np.concatenate([[0], np.cumsum(per_doc, dtype=np.int64)[:-1]]) if len(per_doc) else np.zeros(0, np.int64)
        line_in_doc = np.arange(len(keys), dtype=np.int64) - np.repeat(starts, per_doc)
        pos = pack_positions(task_in_group, doc_of_line[first_idx], line_in_doc[first_idx])
        _save(out.first_pos, pos)
    _save(out.keys, keys)
    _save(out.lines_per_doc, per_doc)
    _save(out.repeated, uniq[n > 1])
    _save(out.unique, uniq)
    return {
        "documents": len(per_doc),
        "lines": int(keys.size),
        "unique_lines_in_shard": int(uniq.size),
    }


def _merge_sorted(running: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Union of two sorted arrays without common elements, in one new array."""
    out = np.empty(running.size + new.size, dtype=np.uint64)
    pos = np.searchsorted(running, new) + np.arange(new.size)
    is_new = np.zeros(out.size, dtype=bool)
    is_new[pos] = True
    out[pos] = new
    out[~is_new] = running
    return out


def merge_group(shards: list[ShardHashes], dups_path: Path, first_path: Path, keep_first: bool) -> dict[str, int]:
    """Find the keys that occur twice or more in a group of shards; save them sorted.

    The group's unique keys are folded in one shard at a time: a key already in
    the running set is a duplicate, a new one is merged in. The running set costs
    8 bytes per unique line (16 while a merge copies it), never one entry per
    (shard, line) pair.
    """
    running = np.zeros(0, dtype=np.uint64)
    dup_parts: list[np.ndarray] = []
    peak = 0
    for s in shards:
        keys = np.load(s.unique)
        found, _ = lookup(running, keys)
        dup_parts.append(keys[found])
        dup_parts.append(np.load(s.repeated))
        fresh = keys[~found]
        peak = max(peak, 2 * running.nbytes + keys.nbytes + fresh.nbytes + found.nbytes + 9 * fresh.size)
        running = _merge_sorted(running, fresh)
        del keys, found, fresh
    n_unique = int(running.size)
    del running
    dups = np.unique(np.concatenate(dup_parts)) if dup_parts else np.zeros(0, np.uint64)
    del dup_parts
    _save(dups_path, dups)
    if keep_first:
        first = np.full(dups.size, _NO_POSITION, dtype=np.uint64)
        for s in shards:
            keys = np.load(s.unique, mmap_mode="r")
            pos = np.load(s.first_pos, mmap_mode="r")
            hit, idx = lookup(dups, np.asarray(keys))
            np.minimum.at(first, idx[hit], np.asarray(pos)[hit])
        _save(first_path, first)
    return {
        "group_unique_lines": n_unique,
        "group_duplicate_keys": int(dups.size),
        "hashset_bytes": 8 * n_unique,
        "hashset_peak_bytes": int(peak),
        "dupset_bytes": int(dups.nbytes),
    }


def lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found mask, index) of each query in a sorted key array."""
    if sorted_keys.size == 0:
        return np.zeros(queries.shape, bool), np.zeros(queries.shape, np.int64)
    idx = np.searchsorted(sorted_keys, queries)
    idx = np.minimum(idx, sorted_keys.size - 1)
    return sorted_keys[idx] == queries, idx


class LineDedup(Step):
    """Pass 2: remove duplicated lines using the group's duplicate keys."""

    name = "line_dedup"

    def __init__(self, keep_first: bool = False) -> None:
        self.keep_first = keep_first

    def keep_mask(self, ctx: TaskContext) -> tuple[np.ndarray, np.ndarray]:
        shard = shard_hashes_dir(ctx.work_dir, ctx.task_id)
        dups_path, first_path = group_files(ctx.work_dir, ctx.group_id)
        keys = np.load(shard.keys)
        per_doc = np.load(shard.lines_per_doc)
        dups = np.load(dups_path, mmap_mode="r")
        is_dup, idx = lookup(dups, keys)
        if not self.keep_first:
            return ~is_dup, per_doc
        first = np.load(first_path, mmap_mode="r")
        starts = np.concatenate([[0], np.cumsum(per_doc, dtype=np.int64)[:-1]]) if per_doc.size else np.zeros(0, np.int64)
        doc_of_line = np.repeat(np.arange(per_doc.size, dtype=np.int64), per_doc)
        line_in_doc = np.arange(keys.size, dtype=np.int64) - np.repeat(starts, per_doc)
        pos = pack_positions(ctx.index_in_group, doc_of_line, line_in_doc)
        keep = ~is_dup
        if dups.size:
            keep |= is_dup & (first[idx] == pos)
        return keep, per_doc

    def run(self, docs: Iterable[Document], ctx: TaskContext) -> Iterator[Document]:
        keep, per_doc = self.keep_mask(ctx)
        st = ctx.stats.step(self.name)
        offset = 0
        for i, doc in enumerate(docs):
            lines = doc.raw_content.split("\n")
            if i >= per_doc.size or len(lines) != per_doc[i]:
                raise CcpipeError(
                    f"shard {ctx.task_id}: document {i} differs from the hashing pass; "
                    "the input changed between passes. Delete <out>/_work/line_hashes and rerun."
                )
            mask = keep[offset : offset + len(lines)]
            offset += len(lines)
            st.counters["lines_in"] += len(lines)
            if mask.all():
                st.counters["lines_out"] += len(lines)
                yield doc
                continue
            kept = [line for line, k in zip(lines, mask) if k]
            st.counters["lines_out"] += len(kept)
            if not kept:
                st.dropped["all_lines_duplicated"] += 1
                continue
            doc.set_content("\n".join(kept), len(kept))
            yield doc
