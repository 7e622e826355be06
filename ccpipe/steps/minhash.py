"""Exact and near-duplicate documents with MinHash LSH, resolved before line dedup.

Duplicated pages must keep one intact copy. Line dedup removes every line that
occurs in two documents, so two copies of a page would strip each other's lines
and both vanish; here whole documents are clustered first, on their full text, one
member of each cluster is kept, and line dedup then works on the survivors only.
An exact duplicate is a near duplicate with Jaccard 1: one mechanism for both
(a text shorter than ``ngram`` words is one shingle, so short copies match too).

Phases, each a map over small picklable arguments, so both executors run it and
no process ever holds all documents or all signatures of a crawl:

1. **sign** (:class:`SignatureWriter`, inside the run's read pass, which already
   reads every document once). Per shard, ``<out>/_work/minhash/task-NNNNN/``:
   ``signatures.npy`` (N x num_perm uint32), ``lengths.npy``, the band keys sorted
   by shuffle bucket (``band_keys.npy``, ``band_docs.npy``, ``bucket_offsets.npy``),
   the documents' ids (``ids.arrow``, for audits) and, for exact verification, each
   document's sorted shingle hashes (``shingles.npy`` + ``shingle_offsets.npy``).
2. **bucket** (:func:`bucket_task`, one per bucket, ``buckets`` in all). Reads
   its slice of every shard's band keys (memory: docs x bands / buckets x 12
   bytes), sorts them, and turns every group of equal keys into candidate pairs;
   each pair is verified (``minhash.verify``) with the exact Jaccard of the two
   shingle sets or the signatures' estimate, both memory-mapped, and the pairs
   that pass are saved as edges.
3. **cluster** (:func:`cluster_task`, a single task). Union-find over the edges
   only (nodes are the documents that have an edge: far fewer than documents);
   picks the kept document of each cluster and writes one small file per shard.
4. **filter** (:class:`MinHashFilter`, the first step of the main pass). Drops
   the members that are not kept (reason ``near_duplicate``) and writes
   ``dup_cluster_id`` / ``dup_cluster_size`` on the rest; line dedup's group merge
   leaves the removed documents out (:func:`removed_mask`).

A document is named by its *global position* ``task_id << 32 | seq`` (``seq``:
its index among the documents read from the shard). ``dup_cluster_id`` is the
global position of the cluster's kept document; a document without duplicates is
a cluster of one: its own position, size 1.

Keep rule (``minhash.keep``): ``first`` keeps the earliest document in input
order (smallest global position); ``longest`` keeps the longest text, ties to
the earliest. Both are deterministic and independent of the executor.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from ccpipe import minhash_core as mc
from ccpipe.document import Document
from ccpipe.stats import write_json_atomic
from ccpipe.steps.base import Step, TaskContext

log = logging.getLogger(__name__)

STEP_NAME = "minhash"
DROP_REASON = "near_duplicate"
_SEQ_BITS = np.uint64(32)


def minhash_dir(work_dir: Path) -> Path:
    return Path(work_dir) / "minhash"


def shard_dir(work_dir: Path, task_id: int) -> Path:
    return minhash_dir(work_dir) / f"task-{task_id:05d}"


def bucket_marker(work_dir: Path, bucket: int) -> Path:
    return minhash_dir(work_dir) / "edges" / f"bucket-{bucket:04d}.done"


def cluster_marker(work_dir: Path) -> Path:
    return minhash_dir(work_dir) / "clusters" / "DONE"


def _edges_path(work_dir: Path, bucket: int) -> Path:
    return minhash_dir(work_dir) / "edges" / f"bucket-{bucket:04d}.npy"


def _cluster_file(work_dir: Path, task_id: int) -> Path:
    return minhash_dir(work_dir) / "clusters" / f"task-{task_id:05d}.npz"


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def global_pos(task_id: int, seq: np.ndarray) -> np.ndarray:
    return (np.uint64(task_id) << _SEQ_BITS) | seq.astype(np.uint64)


# --- phase 1: signatures -----------------------------------------------------


class SignatureWriter:
    """Signatures and band keys of a shard's documents: :meth:`add` each document in
    read order, then :meth:`save`."""

    def __init__(self, *, num_perm: int, seed: int, ngram: int, bands: int, rows: int, buckets: int,
                 keep_shingles: bool = False, batch: int = 256) -> None:
        self.keep_shingles = keep_shingles
        self.num_perm, self.seed, self.ngram = num_perm, seed, ngram
        self.bands, self.rows, self.buckets = bands, rows, buckets
        self.batch = batch
        self._sigs: list[np.ndarray] = []
        self._lengths: list[int] = []
        self._ids: list[str] = []
        self._shingles: list[np.ndarray] = []
        self._texts: list[str] = []

    def add(self, doc: Document) -> None:
        self._texts.append(doc.raw_content)
        self._lengths.append(len(doc.raw_content))
        self._ids.append(doc.id)
        if len(self._texts) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        if not self._texts:
            return
        sh = mc.shingle_hashes_many(self._texts, self.ngram)
        if self.keep_shingles:  # the set gives the same signature as the list
            sh = [mc.sorted_unique(x) for x in sh]
            self._shingles.extend(sh)
        self._sigs.append(mc.signatures_of(sh, self.num_perm, self.seed))
        self._texts = []

    def save(self, d: Path) -> dict[str, int]:
        self._flush()
        sig = np.concatenate(self._sigs) if self._sigs else np.zeros((0, self.num_perm), np.uint32)
        return write_shard(d, sig, np.asarray(self._lengths, np.int64), self.bands, self.rows, self.buckets,
                           self._ids, self._shingles if self.keep_shingles else None)


def make_signature_writer(cfg: Any, lsh: tuple[int, int] | None = None) -> SignatureWriter:
    """The sign step of a ``MinHashConfig``; ``lsh``: its (bands, rows) when already
    known (choosing them integrates the S-curve: ~1 s with scipy's import)."""
    bands, rows = lsh or cfg.lsh()
    return SignatureWriter(num_perm=cfg.num_perm, seed=cfg.seed, ngram=cfg.ngram, bands=bands, rows=rows,
                           buckets=cfg.buckets, keep_shingles=cfg.verify == "exact")


def check_available() -> None:
    """Fail before any work when datasketch is missing."""
    try:
        import datasketch  # noqa: F401
    except ImportError:
        from ccpipe.errors import ConfigError

        raise ConfigError("MinHash dedup needs datasketch: pip install datasketch (or set minhash.enabled=false)") from None


def bucket_of(keys: np.ndarray, buckets: int) -> np.ndarray:
    # the low bits of a mixed 64-bit key are uniform
    return (keys % np.uint64(buckets)).astype(np.int64)


def write_shard(d: Path, sig: np.ndarray, lengths: np.ndarray,
                bands: int, rows: int, buckets: int, ids: list[str] | None = None,
                shingles: list[np.ndarray] | None = None) -> dict[str, int]:
    """Save one shard's signatures and its band keys grouped by shuffle bucket.

    ``ids`` (WARC-Record-IDs, ``ids.arrow``) are only for audits: which documents
    a cluster holds, including the removed ones that are not in the output.
    ``shingles`` (sorted unique shingle hashes per document) serve the exact
    verification of candidate pairs: ``shingles.npy`` + ``shingle_offsets.npy``."""
    d.mkdir(parents=True, exist_ok=True)
    if shingles is not None:
        sizes = np.fromiter((x.size for x in shingles), np.int64, len(shingles))
        _save(d / "shingle_offsets.npy", np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
        _save(d / "shingles.npy", np.concatenate(shingles).astype(np.uint32) if shingles else np.zeros(0, np.uint32))
    if ids is not None:
        tmp = d / f".ids.arrow.tmp-{os.getpid()}"
        feather.write_feather(pa.table({"id": pa.array(ids, pa.string())}), tmp, compression="lz4")
        os.replace(tmp, d / "ids.arrow")
    ok = mc.has_shingles(sig)
    keys = mc.band_keys(sig, bands, rows)  # N x bands
    seq = np.repeat(np.arange(sig.shape[0], dtype=np.uint32), bands)
    keys = keys.reshape(-1)  # doc-major: doc 0's bands, then doc 1's, ...
    keep = np.repeat(ok, bands)  # a text without shingles matches nothing
    keys, seq = keys[keep], seq[keep]
    bucket = bucket_of(keys, buckets)
    order = np.argsort(bucket, kind="stable")
    offsets = np.searchsorted(bucket[order], np.arange(buckets + 1))
    _save(d / "signatures.npy", sig)
    _save(d / "lengths.npy", lengths)
    _save(d / "band_keys.npy", keys[order])
    _save(d / "band_docs.npy", seq[order])
    _save(d / "bucket_offsets.npy", offsets.astype(np.int64))
    return {"signed_docs": int(sig.shape[0]), "docs_without_shingles": int((~ok).sum()), "band_keys": int(keys.size)}


# --- phase 2: buckets -> candidate pairs -> edges ---------------------------


def bucket_task_fn(work_dir: Path, bucket: int, task_ids: list[int], *, verify_threshold: float | None,
                   num_perm: int, verify: str = "estimate", max_pairs_per_group: int = 64,
                   fault: Any = None) -> dict[str, Any]:
    """Candidate pairs of one bucket: documents that share a band key.

    A group of k documents with one key gives all k(k-1)/2 pairs when k is small
    and a star from its earliest member otherwise (connectivity is what
    clustering needs). With ``verify_threshold``, a pair is kept only when its
    Jaccard reaches it: ``exact`` (the two documents' shingle-hash sets, read
    from the shards' memory-mapped files) or ``estimate`` (the signatures').
    """
    keys_l, docs_l = [], []
    for t in task_ids:
        d = shard_dir(work_dir, t)
        off = np.load(d / "bucket_offsets.npy")
        lo, hi = int(off[bucket]), int(off[bucket + 1])
        if hi <= lo:
            continue
        keys_l.append(np.asarray(np.load(d / "band_keys.npy", mmap_mode="r")[lo:hi]))
        docs_l.append(global_pos(t, np.asarray(np.load(d / "band_docs.npy", mmap_mode="r")[lo:hi])))
    keys = np.concatenate(keys_l) if keys_l else np.zeros(0, np.uint64)
    docs = np.concatenate(docs_l) if docs_l else np.zeros(0, np.uint64)
    del keys_l, docs_l
    order = np.lexsort((docs, keys))
    keys, docs = keys[order], docs[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if keys.size else np.zeros(0, np.int64)
    sizes = np.diff(np.concatenate([starts, [keys.size]])) if keys.size else np.zeros(0, np.int64)
    multi = sizes > 1
    pairs_a: list[np.ndarray] = []
    pairs_b: list[np.ndarray] = []
    # groups of two (nearly all of them): vectorised
    two = starts[sizes == 2]
    pairs_a.append(docs[two])
    pairs_b.append(docs[two + 1])
    for s, k in zip(starts[multi & (sizes > 2)], sizes[multi & (sizes > 2)]):
        g = np.unique(docs[s : s + k])
        if g.size < 2:
            continue
        if g.size <= max_pairs_per_group:
            i, j = np.triu_indices(g.size, 1)
        else:
            i, j = np.zeros(g.size - 1, np.int64), np.arange(1, g.size)
        pairs_a.append(g[i])
        pairs_b.append(g[j])
    a = np.concatenate(pairs_a)
    b = np.concatenate(pairs_b)
    ab = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1) if a.size else np.zeros((0, 2), np.uint64)
    ab = ab[ab[:, 0] != ab[:, 1]]  # one document twice in a group (two equal bands)
    ab = np.unique(ab, axis=0) if ab.size else ab
    candidates = int(ab.shape[0])
    if verify_threshold is not None and candidates:
        sim = _exact_jaccard(work_dir, ab) if verify == "exact" else _estimated_jaccard(work_dir, ab, num_perm)
        ab = ab[sim >= verify_threshold]
    _save(_edges_path(work_dir, bucket), ab.astype(np.uint64))
    if fault is not None:
        fault.hit("minhash_buckets", "middle", bucket)
    counters = {
        "band_entries": int(keys.size),
        "band_collision_groups": int(multi.sum()),
        "candidate_pairs": candidates,
        "verified_pairs": int(ab.shape[0]),
        "bucket_entries_max": int(keys.size),
    }
    write_json_atomic(bucket_marker(work_dir, bucket), counters)
    return counters


def _estimated_jaccard(work_dir: Path, pairs: np.ndarray, num_perm: int) -> np.ndarray:
    """Estimated Jaccard (``LeanMinHash.jaccard``) of each pair, from memory-mapped signatures."""
    sig_a = _gather(work_dir, pairs[:, 0], num_perm)
    sig_b = _gather(work_dir, pairs[:, 1], num_perm)
    return mc.estimated_jaccard(sig_a, sig_b)


def _exact_jaccard(work_dir: Path, pairs: np.ndarray) -> np.ndarray:
    """Exact Jaccard of each pair's shingle-hash sets (32-bit hashes)."""
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def shingles(pos: int) -> np.ndarray:
        t, seq = pos >> 32, pos & 0xFFFFFFFF
        if t not in cache:
            d = shard_dir(work_dir, t)
            cache[t] = (np.load(d / "shingles.npy", mmap_mode="r"), np.load(d / "shingle_offsets.npy", mmap_mode="r"))
        values, off = cache[t]
        return np.asarray(values[off[seq] : off[seq + 1]])

    return np.array([mc.set_jaccard(shingles(a), shingles(b)) for a, b in pairs.tolist()], dtype=np.float64)


def _gather(work_dir: Path, pos: np.ndarray, num_perm: int) -> np.ndarray:
    out = np.empty((pos.size, num_perm), np.uint32)
    task = (pos >> _SEQ_BITS).astype(np.int64)
    seq = (pos & np.uint64(0xFFFFFFFF)).astype(np.int64)
    for t in np.unique(task):
        m = task == t
        sig = np.load(shard_dir(work_dir, int(t)) / "signatures.npy", mmap_mode="r")
        out[m] = sig[seq[m]]
    return out


# --- phase 3: union-find over the edges --------------------------------------


def union_find(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root of each of ``n`` nodes given edges ``a[i] - b[i]``; the root of a
    component is its smallest node.

    Vectorised union-find: every round links each edge's larger root under its
    smaller one (``minimum.at``), then compresses paths by pointer jumping, until
    no edge joins two roots. Rounds grow with the log of the longest chain.
    """
    parent = np.arange(n, dtype=np.int64)
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    while True:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            return parent
        lo, hi = np.minimum(ra[differ], rb[differ]), np.maximum(ra[differ], rb[differ])
        np.minimum.at(parent, hi, lo)
        while True:  # path compression: point every node at its root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
        a, b = a[differ], b[differ]


def cluster_task_fn(work_dir: Path, buckets: int, task_ids: list[int], keep: str, fault: Any = None) -> dict[str, Any]:
    """Clusters from all buckets' edges; one file per shard that has cluster members."""
    parts = [np.load(_edges_path(work_dir, k)) for k in range(buckets)]
    edges = np.concatenate(parts) if parts else np.zeros((0, 2), np.uint64)
    del parts
    nodes, inv = np.unique(edges.reshape(-1), return_inverse=True)  # sorted global positions
    inv = inv.reshape(-1, 2)
    root = union_find(nodes.size, inv[:, 0], inv[:, 1]) if nodes.size else np.zeros(0, np.int64)
    size = np.bincount(root, minlength=nodes.size)[root] if nodes.size else np.zeros(0, np.int64)
    if keep == "longest" and nodes.size:
        length = _gather_lengths(work_dir, nodes)
        # per component: the longest, ties to the smallest position (nodes are sorted)
        order = np.lexsort((np.arange(nodes.size), -length, root))
        first = np.concatenate([[True], root[order][1:] != root[order][:-1]])
        winner = np.empty(nodes.size, np.int64)
        winner[root[order][first]] = order[first]
        kept = winner[root]
    else:
        kept = root  # the smallest global position: first in input order
    cluster_id = nodes[kept]
    cdir = minhash_dir(work_dir) / "clusters"
    cdir.mkdir(parents=True, exist_ok=True)
    task = (nodes >> _SEQ_BITS).astype(np.int64)
    seq = (nodes & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    for t in task_ids:
        m = task == t
        path = _cluster_file(work_dir, t)
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npz")
        np.savez(tmp, seq=seq[m], cluster_id=cluster_id[m].astype(np.int64), size=size[m].astype(np.int32))
        os.replace(tmp, path)
    if fault is not None:
        fault.hit("minhash_cluster", "middle", 0)
    n_clusters = int(np.unique(root).size)
    counters = {
        "edges": int(edges.shape[0]),
        "duplicate_clusters": n_clusters,
        "docs_in_clusters": int(nodes.size),
        "cluster_size_max": int(size.max()) if size.size else 0,
        "cluster_docs_to_remove": int(nodes.size - n_clusters),
        "cluster_peak_edge_bytes_max": int(edges.nbytes),
    }
    write_json_atomic(cluster_marker(work_dir), counters)
    return counters


def _gather_lengths(work_dir: Path, pos: np.ndarray) -> np.ndarray:
    out = np.empty(pos.size, np.int64)
    task = (pos >> _SEQ_BITS).astype(np.int64)
    seq = (pos & np.uint64(0xFFFFFFFF)).astype(np.int64)
    for t in np.unique(task):
        m = task == t
        out[m] = np.load(shard_dir(work_dir, int(t)) / "lengths.npy", mmap_mode="r")[seq[m]]
    return out


# --- phase 4: the main pass drops the members that are not kept -----------------


def cluster_members(work_dir: Path, task_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seq, cluster_id, size) of the shard's documents that have a duplicate."""
    cf = _cluster_file(work_dir, task_id)
    if not cf.is_file():
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    with np.load(cf) as z:
        return z["seq"].astype(np.int64), z["cluster_id"].astype(np.int64), z["size"].astype(np.int32)


def removed_mask(work_dir: Path, task_id: int, n_docs: int) -> np.ndarray:
    """True for each of the shard's ``n_docs`` documents that MinHash removes."""
    seq, cid, _ = cluster_members(work_dir, task_id)
    out = np.zeros(n_docs, bool)
    out[seq] = cid != global_pos(task_id, seq).astype(np.int64)
    return out


class MinHashFilter(Step):
    """Drop the cluster members that are not kept; label the rest with their cluster."""

    name = STEP_NAME
    output_fields = {"dup_cluster_id": pa.int64(), "dup_cluster_size": pa.int32()}

    def run(self, docs: Iterable[Document], ctx: TaskContext) -> Iterator[Document]:
        seq, cid, size = cluster_members(ctx.work_dir, ctx.task_id)
        members = {int(s): (int(c), int(n)) for s, c, n in zip(seq.tolist(), cid.tolist(), size.tolist())}
        base = int(ctx.task_id) << 32
        st = ctx.stats.step(self.name)
        for doc in docs:
            own = base | doc.position
            cluster, n = members.get(doc.position, (own, 1))
            if cluster != own:
                st.dropped[DROP_REASON] += 1
                continue
            if n > 1:
                st.counters["docs_kept_from_clusters"] += 1
            doc.extras["dup_cluster_id"] = cluster
            doc.extras["dup_cluster_size"] = n
            yield doc


# --- the phases as executor tasks ---------------------------------------------


def bucket_task(args: tuple[Path, int, list[int], float | None, int, str, Any]) -> dict[str, Any]:
    from ccpipe import faults

    work_dir, bucket, task_ids, threshold, num_perm, verify, fault = args
    marker = bucket_marker(work_dir, bucket)
    if marker.is_file():  # finished before a retry: idempotent
        return json.loads(marker.read_text())
    faults.hit(fault, "minhash_buckets", "start", bucket)
    counters = bucket_task_fn(work_dir, bucket, task_ids, verify_threshold=threshold, num_perm=num_perm,
                              verify=verify, fault=fault)
    faults.hit(fault, "minhash_buckets", "done", bucket)
    return counters


def cluster_task(args: tuple[Path, int, list[int], str, Any]) -> dict[str, Any]:
    from ccpipe import faults

    work_dir, buckets, task_ids, keep, fault = args
    if cluster_marker(work_dir).is_file():
        return json.loads(cluster_marker(work_dir).read_text())
    faults.hit(fault, "minhash_cluster", "start", 0)
    counters = cluster_task_fn(work_dir, buckets, task_ids, keep, fault=fault)
    faults.hit(fault, "minhash_cluster", "done", 0)
    return counters


def run_phases(ex: Any, cfg: Any, out_dir: Path, task_ids: list[int], fault: Any = None) -> dict[str, float]:
    """Buckets and clustering, each skipping what its markers say is done.

    ``cfg`` is the run's ``PipelineConfig``. Returns wall seconds per phase.
    """
    import time

    mh = cfg.minhash
    work = out_dir / "_work"
    seconds: dict[str, float] = {}
    if cluster_marker(work).is_file():
        return seconds
    t0 = time.perf_counter()
    todo = [k for k in range(mh.buckets) if not bucket_marker(work, k).is_file()]
    items = [(work, k, task_ids, mh.pair_threshold(), mh.num_perm, mh.verify, fault) for k in todo]
    for _ in ex.map(bucket_task, items, desc="minhash buckets"):
        pass
    seconds["minhash_buckets"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # one task: union-find needs every edge, but only edges (no documents, no signatures)
    for _ in ex.map(cluster_task, [(work, mh.buckets, task_ids, mh.keep, fault)], desc="minhash clusters"):
        pass
    seconds["minhash_cluster"] = time.perf_counter() - t0
    return seconds


def run_counters(work_dir: Path) -> dict[str, int]:
    """The run-level MinHash figures (buckets and clustering) for the merged stats."""
    from ccpipe.stats import merge_counters
    from collections import Counter

    total: Counter = Counter()
    for marker in sorted((minhash_dir(work_dir) / "edges").glob("bucket-*.done")):
        merge_counters(total, json.loads(marker.read_text()))
    if cluster_marker(work_dir).is_file():
        merge_counters(total, json.loads(cluster_marker(work_dir).read_text()))
    return dict(total)


def read_clusters(work_dir: Path) -> dict[str, tuple[int, int, bool]]:
    """Audit view of a run's clusters: document id -> (cluster id, size, kept)
    for every document that has a near duplicate, removed ones included."""
    out: dict[str, tuple[int, int, bool]] = {}
    for f in sorted((minhash_dir(work_dir) / "clusters").glob("task-*.npz")):
        task_id = int(f.stem.split("-")[1])
        ids = feather.read_table(shard_dir(work_dir, task_id) / "ids.arrow").column("id").to_pylist()
        with np.load(f) as z:
            own = global_pos(task_id, z["seq"]).astype(np.int64)
            for s, c, n, o in zip(z["seq"].tolist(), z["cluster_id"].tolist(), z["size"].tolist(), own.tolist()):
                out[ids[s]] = (c, n, c == o)
    return out
