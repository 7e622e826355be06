"""Line-level deduplication with cc_net's exact semantics, as a two-pass shuffle.

cc_net (``dedup.HashesCollector`` then ``DuplicatesRemover`` and ``finalize_doc``):
a line whose key occurs in **two or more documents** of a group is removed from
every one of them, its first occurrence included; a line repeated only **inside one
document** keeps its first occurrence there. Documents with empty text, or left
without lines, are dropped. ``tests/test_ccnet_reference.py`` runs cc_net's own
code beside this one on real Common Crawl excerpts.

Pass 1 (:class:`LineHasher`, inside the run's read pass): every line's key, in
order, plus each document's *distinct* keys sorted by key (with the document's
index and, for ``keep_first``, the line where the key first occurs in it), and a
mask of the lines that are the first of their key inside their document.

Merge (:func:`merge_group`, one per group of shards): a key is a duplicate when
it occurs in two or more distinct documents of the group, counting only the
documents that survive document-level dedup (``removed`` masks). The group's
duplicate keys are saved sorted, so pass 2 looks them up with a binary search on a
memory-mapped array that all workers share through the page cache.

Pass 2 (:class:`LineDedup`, in the main pass): keep a line when its key is not a
duplicate and it is the first of its key in its document; with ``keep_first``
also keep a duplicate key's first occurrence in the group (shard order, then
document, then line).
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
    def first_in_doc(self) -> Path:  # per line: the first line of its key in its document
        return self.directory / "first_in_doc.npy"

    @property
    def doc_keys(self) -> Path:  # each document's distinct keys, sorted by (key, document)
        return self.directory / "doc_keys.npy"

    @property
    def doc_keys_doc(self) -> Path:  # the document of each entry of doc_keys
        return self.directory / "doc_keys_doc.npy"

    @property
    def doc_keys_line(self) -> Path:  # the line where that key first occurs in that document
        return self.directory / "doc_keys_line.npy"


def shard_hashes_dir(work_dir: Path, task_id: int) -> ShardHashes:
    return ShardHashes(Path(work_dir) / "line_hashes" / f"task-{task_id:05d}")


def group_files(work_dir: Path, group_id: int) -> tuple[Path, Path]:
    d = Path(work_dir) / "line_hashes"
    return d / f"group-{group_id:05d}.dups.npy", d / f"group-{group_id:05d}.first.npy"


def _save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


class LineHasher:
    """Pass 1 for one shard: fed every document in order (:meth:`add`), then :meth:`save`."""

    def __init__(self, keep_first: bool) -> None:
        self.keep_first = keep_first
        self._chunks: list[np.ndarray] = []
        self._counts: list[int] = []

    def add(self, doc: Document) -> None:
        lines = doc.raw_content.split("\n")
        self._chunks.append(line_hashes(lines))
        self._counts.append(len(lines))

    def save(self, out: ShardHashes) -> dict[str, int]:
        keys = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.uint64)
        per_doc = np.asarray(self._counts, dtype=np.uint32)
        self._chunks, self._counts = [], []
        doc_of_line = np.repeat(np.arange(per_doc.size, dtype=np.uint32), per_doc)
        # by key, then document, then line: the first entry of each (key, document)
        # run is that key's first line in that document
        order = np.lexsort((doc_of_line, keys))
        k, d = keys[order], doc_of_line[order]
        first = np.ones(order.size, bool)
        if order.size:
            first[1:] = (k[1:] != k[:-1]) | (d[1:] != d[:-1])
        first_in_doc = np.zeros(keys.size, bool)
        first_in_doc[order[first]] = True
        out.directory.mkdir(parents=True, exist_ok=True)
        if self.keep_first:
            starts = np.concatenate([[0], np.cumsum(per_doc, dtype=np.int64)[:-1]]) if per_doc.size else np.zeros(0, np.int64)
            line_in_doc = (order[first] - starts[d[first]]).astype(np.uint32)
            _save(out.doc_keys_line, line_in_doc)
        _save(out.keys, keys)
        _save(out.lines_per_doc, per_doc)
        _save(out.first_in_doc, first_in_doc)
        _save(out.doc_keys, k[first])
        _save(out.doc_keys_doc, d[first])
        return {"documents": int(per_doc.size), "lines": int(keys.size)}


def hash_documents(docs: Iterable[Document], out: ShardHashes, keep_first: bool) -> dict[str, int]:
    """Pass 1 for one shard's documents."""
    hasher = LineHasher(keep_first)
    for doc in docs:
        hasher.add(doc)
    return hasher.save(out)


def _merge_sorted(running: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Union of two sorted arrays without common elements, in one new array."""
    out = np.empty(running.size + new.size, dtype=np.uint64)
    pos = np.searchsorted(running, new) + np.arange(new.size)
    is_new = np.zeros(out.size, dtype=bool)
    is_new[pos] = True
    out[pos] = new
    out[~is_new] = running
    return out


def merge_group(shards: list[ShardHashes], dups_path: Path, first_path: Path, keep_first: bool,
                removed: list[np.ndarray | None] | None = None) -> dict[str, int]:
    """Find the keys that occur in two or more documents of a group; save them sorted.

    ``removed[i]`` (optional) masks the documents of shard ``i`` that document-level
    dedup removed: their lines count for nothing. Each shard contributes its
    surviving documents' distinct keys (sorted, so the keys in two of its documents
    are found in one pass); the group's keys are folded in one shard at a time: a
    key already in the running set is a duplicate, a new one is merged in. The
    running set costs 8 bytes per unique line (16 while a merge copies it).
    """
    removed = removed if removed is not None else [None] * len(shards)
    running = np.zeros(0, dtype=np.uint64)
    dup_parts: list[np.ndarray] = []
    peak = 0
    unique_per_shard: list[int] = []
    for s, gone in zip(shards, removed):
        keys, _ = _surviving_doc_keys(s, gone)
        uniq, in_two_docs = _runs(keys)
        unique_per_shard.append(int(uniq.size))
        found, _ = lookup(running, uniq)
        dup_parts.append(uniq[found])
        dup_parts.append(in_two_docs)
        fresh = uniq[~found]
        peak = max(peak, 2 * running.nbytes + keys.nbytes + uniq.nbytes + fresh.nbytes + found.nbytes + 9 * fresh.size)
        running = _merge_sorted(running, fresh)
        del keys, uniq, found, fresh
    n_unique = int(running.size)
    del running
    dups = np.unique(np.concatenate(dup_parts)) if dup_parts else np.zeros(0, np.uint64)
    del dup_parts
    _save(dups_path, dups)
    if keep_first:
        first = np.full(dups.size, _NO_POSITION, dtype=np.uint64)
        for i, (s, gone) in enumerate(zip(shards, removed)):
            keys, sel = _surviving_doc_keys(s, gone)
            doc = np.load(s.doc_keys_doc)[sel] if sel is not None else np.load(s.doc_keys_doc)
            line = np.load(s.doc_keys_line)[sel] if sel is not None else np.load(s.doc_keys_line)
            hit, idx = lookup(dups, keys)
            np.minimum.at(first, idx[hit], pack_positions(i, doc[hit], line[hit]))
        _save(first_path, first)
    return {
        "group_unique_lines": n_unique,
        "group_duplicate_keys": int(dups.size),
        "unique_lines_in_shards": int(sum(unique_per_shard)),
        "hashset_bytes": 8 * n_unique,
        "hashset_peak_bytes": int(peak),
        "dupset_bytes": int(dups.nbytes),
    }


def _surviving_doc_keys(s: ShardHashes, removed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The shard's (key-sorted) distinct keys per document, without removed documents'."""
    keys = np.load(s.doc_keys)
    if removed is None or not removed.any():
        return keys, None
    sel = ~removed[np.load(s.doc_keys_doc)]
    return keys[sel], sel


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique keys, keys that occur twice or more) of a sorted array."""
    if sorted_keys.size == 0:
        return sorted_keys, sorted_keys
    new = np.ones(sorted_keys.size, bool)
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    uniq = sorted_keys[new]
    repeat = np.zeros(sorted_keys.size, bool)
    repeat[1:] = ~new[1:]
    return uniq, np.unique(sorted_keys[repeat])


def lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found mask, index) of each query in a sorted key array."""
    if sorted_keys.size == 0:
        return np.zeros(queries.shape, bool), np.zeros(queries.shape, np.int64)
    idx = np.searchsorted(sorted_keys, queries)
    idx = np.minimum(idx, sorted_keys.size - 1)
    return sorted_keys[idx] == queries, idx


class LineDedup(Step):
    """Pass 2: remove duplicated lines using the group's duplicate keys.

    Documents carry their index in the shard (``Document.position``), so documents
    removed earlier in the main pass (near duplicates) are simply skipped."""

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
        keep = ~is_dup & np.load(shard.first_in_doc)
        if self.keep_first and dups.size:
            first = np.load(first_path, mmap_mode="r")
            starts = np.concatenate([[0], np.cumsum(per_doc, dtype=np.int64)[:-1]]) if per_doc.size else np.zeros(0, np.int64)
            doc_of_line = np.repeat(np.arange(per_doc.size, dtype=np.int64), per_doc)
            line_in_doc = np.arange(keys.size, dtype=np.int64) - np.repeat(starts, per_doc)
            pos = pack_positions(ctx.index_in_group, doc_of_line, line_in_doc)
            keep |= is_dup & (first[idx] == pos)
        return keep, per_doc

    def run(self, docs: Iterable[Document], ctx: TaskContext) -> Iterator[Document]:
        keep, per_doc = self.keep_mask(ctx)
        offsets = np.concatenate([[0], np.cumsum(per_doc, dtype=np.int64)])
        st = ctx.stats.step(self.name)
        for doc in docs:
            i = doc.position
            lines = doc.raw_content.split("\n")
            if not 0 <= i < per_doc.size or len(lines) != per_doc[i]:
                raise CcpipeError(
                    f"shard {ctx.task_id}: document {i} differs from the hashing pass; "
                    "the input changed between passes. Delete <out>/_work and rerun."
                )
            st.counters["lines_in"] += len(lines)
            if not doc.raw_content:
                st.dropped["empty"] += 1  # cc_net drops a document without text
                continue
            mask = keep[offsets[i] : offsets[i + 1]]
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
