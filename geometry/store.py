"""On-disk layout under ``<run>/_geometry/`` and the memory-mapped embedding store.

    <run>/_geometry/embeddings/vectors.f32     float32, row-major N x dim, no header
    <run>/_geometry/embeddings/ids-NNNNN.parquet  one per commit: id, shard (row order = file order)
    <run>/_geometry/embeddings/meta.json       dim, count, segments, model, policy, shards done
    <run>/_geometry/index.faiss + index.json    ANN index over the first ``count`` rows
    <run>/_geometry/score/                       score-model checkpoints
    <run>/_geometry/graph.npz + graph.json      cached kNN graph

The vector file is headerless so appends are plain writes; ``meta.json`` is the commit
point (written by tmp + rename after the vectors are fsynced and the ids segment is in
place), so a run killed mid-append leaves extra bytes that the next open ignores and the
next append truncates. Readers memory-map the file: numpy sees an ``np.memmap`` and torch a
zero-copy ``torch.from_numpy`` view of it, so a service or an audit opens millions of
vectors instantly and every process shares one copy in the page cache.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from geometry.errors import StoreError, UnknownDocumentError, clip

log = logging.getLogger(__name__)

GEOMETRY_DIR = "_geometry"


def geometry_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / GEOMETRY_DIR


def discover_shards(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The run's row files (``ccpipe.io.dataset.shard_files``: ``<run>/data/**/part-*.parquet``)."""
    from ccpipe.io.dataset import shard_files

    run = Path(run_dir)
    if not run.is_dir():
        raise StoreError(f"run directory {run} does not exist; pass the pipeline's output run directory")
    return shard_files(run)


def write_json_atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


@dataclass(slots=True, kw_only=True)
class EmbeddingStore:
    """Append-only store of unit-norm float32 embeddings keyed by document id."""

    root: Path
    """The ``embeddings`` directory."""
    meta: dict
    """Contents of meta.json (count, dim, segments, model, policy, shards)."""
    _ids: np.ndarray | None = field(default=None, repr=False)
    _row: dict[str, int] | None = field(default=None, repr=False)
    _mm: np.ndarray | None = field(default=None, repr=False)

    @property
    def vectors_path(self) -> Path:
        return self.root / "vectors.f32"

    @property
    def count(self) -> int:
        return int(self.meta["count"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str], *, create: bool = False, dim: int = 384, info: dict | None = None) -> "EmbeddingStore":
        """Open ``<run>/_geometry/embeddings``; with ``create`` make an empty one if absent."""
        root = geometry_dir(run_dir) / "embeddings"
        meta_path = root / "meta.json"
        if not meta_path.exists():
            if not create:
                raise StoreError(f"no embeddings under {root}; run `ccpipe-geometry embed {run_dir}` first")
            root.mkdir(parents=True, exist_ok=True)
            meta = {"dim": dim, "count": 0, "segments": 0, "shards": {}, **(info or {})}
            write_json_atomic(meta_path, meta)
            (root / "vectors.f32").touch()
        meta = json.loads(meta_path.read_text())
        store = cls(root=root, meta=meta)
        have = store.vectors_path.stat().st_size if store.vectors_path.exists() else -1
        need = store.count * store.dim * 4
        if have < need:
            raise StoreError(f"{store.vectors_path} holds {have} bytes but meta.json says {need}; delete {root} and re-embed")
        return store

    # -- reading -------------------------------------------------------------------------
    def vectors(self) -> np.ndarray:
        """N x dim float32 memory map (copy-on-write: writes never reach the file), mapped once."""
        if self._mm is None or self._mm.shape[0] != self.count:
            if self.count == 0:
                return np.zeros((0, self.dim), dtype=np.float32)
            self._mm = np.memmap(self.vectors_path, dtype=np.float32, mode="c", shape=(self.count, self.dim))
        return self._mm

    def tensor(self) -> torch.Tensor:
        """N x dim torch view of the memory map, no copy (``torch.from_numpy`` shares it)."""
        return torch.from_numpy(self.vectors())

    def ids(self) -> np.ndarray:
        """Document ids in row order (N, object array), loaded once."""
        if self._ids is None:
            parts = [pq.read_table(self.root / f"ids-{i:05d}.parquet", columns=["id"]).column("id") for i in range(int(self.meta["segments"]))]
            ids = pa.chunked_array([c for p in parts for c in p.chunks], type=pa.string()) if parts else pa.chunked_array([], type=pa.string())
            self._ids = np.asarray(ids.to_pylist(), dtype=object)
            if len(self._ids) != self.count:
                raise StoreError(f"{self.root}: {len(self._ids)} ids for {self.count} vectors; delete it and re-embed")
        return self._ids

    def shards(self) -> np.ndarray:
        """The shard (path relative to the run) each row was embedded from, in row order."""
        parts = [pq.read_table(self.root / f"ids-{i:05d}.parquet", columns=["shard"]).column("shard").to_pylist() for i in range(int(self.meta["segments"]))]
        return np.asarray([s for p in parts for s in p], dtype=object)

    def row_of(self, doc_id: str) -> int:
        if self._row is None:
            self._row = {d: i for i, d in enumerate(self.ids())}
        try:
            return self._row[doc_id]
        except KeyError:
            raise UnknownDocumentError(f"document {clip(doc_id)} is not in {self.root}; embed its shard first", doc_id=doc_id) from None

    def rows_of(self, doc_ids: list[str]) -> np.ndarray:
        return np.asarray([self.row_of(d) for d in doc_ids], dtype=np.int64)

    def has(self, doc_id: str) -> bool:
        if self._row is None:
            self._row = {d: i for i, d in enumerate(self.ids())}
        return doc_id in self._row

    # -- writing -------------------------------------------------------------------------
    def append(self, ids: list[str], vectors: np.ndarray, *, shard: str) -> None:
        """Append rows and commit them (vectors fsynced, ids segment, then meta.json)."""
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim or vecs.shape[0] != len(ids):
            raise ValueError(f"expected {len(ids)} x {self.dim} vectors, got {vecs.shape}")
        if not ids:
            return
        end = self.count * self.dim * 4
        with open(self.vectors_path, "r+b") as f:
            # Bytes past the committed count are the remains of a killed append.
            f.truncate(end)
            f.seek(end)
            f.write(vecs.tobytes())
            f.flush()
            os.fsync(f.fileno())
        seg = int(self.meta["segments"])
        table = pa.table({"id": pa.array(ids, type=pa.string()), "shard": pa.array([shard] * len(ids), type=pa.string())})
        tmp = self.root / f".ids-{seg:05d}.parquet.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, self.root / f"ids-{seg:05d}.parquet")
        self.meta["count"] = self.count + len(ids)
        self.meta["segments"] = seg + 1
        write_json_atomic(self.root / "meta.json", self.meta)
        if self._ids is not None:
            self._ids = np.concatenate([self._ids, np.asarray(ids, dtype=object)])
        if self._row is not None:
            base = self.count - len(ids)
            self._row.update({d: base + i for i, d in enumerate(ids)})

    def mark_shard(self, shard: str, info: dict) -> None:
        self.meta.setdefault("shards", {})[shard] = info
        write_json_atomic(self.root / "meta.json", self.meta)
