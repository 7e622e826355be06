"""Approximate nearest-neighbour index (faiss HNSW, inner product) over the store.

Vectors are unit norm, so inner product ranks like cosine and like Euclidean distance.
The index is extended, not rebuilt, when the store grows: ``index.json`` records how
many store rows it holds and the missing rows are added.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from geometry.store import EmbeddingStore, geometry_dir, write_json_atomic

log = logging.getLogger(__name__)

HNSW_M = 32
"""Graph degree: recall above 0.95 at ef_search 64 on 384-d sentence embeddings."""


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover
        from geometry.errors import GeometryError

        raise GeometryError("faiss is missing: pip install faiss-cpu") from e
    return faiss


def index_paths(run_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    g = geometry_dir(run_dir)
    return g / "index.faiss", g / "index.json"


def build_index(run_dir: str | os.PathLike[str], *, ef_construction: int = 80, chunk: int = 65536) -> dict:
    """Create or extend the index so it covers every stored vector; returns counts."""
    faiss = _faiss()
    store = EmbeddingStore.open(run_dir)
    path, meta_path = index_paths(run_dir)
    if path.exists() and meta_path.exists():
        index = faiss.read_index(str(path))
        have = int(json.loads(meta_path.read_text())["count"])
        if have != index.ntotal or have > store.count:
            log.warning("index %s disagrees with the store; rebuilding it", path)
            index, have = None, 0
    else:
        index, have = None, 0
    if index is None:
        index = faiss.IndexHNSWFlat(store.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
    vecs = store.vectors()
    for lo in range(have, store.count, chunk):
        index.add(np.ascontiguousarray(vecs[lo : min(lo + chunk, store.count)]))
    added = store.count - have
    if added or not path.exists():
        tmp = path.with_name(".index.faiss.tmp")
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
        write_json_atomic(meta_path, {"count": store.count, "kind": f"HNSWFlat,M={HNSW_M},IP"})
    return {"indexed": store.count, "added": added}


class AnnIndex:
    """Loaded faiss index: queries -> candidate rows."""

    def __init__(self, index, ef_search: int = 64) -> None:
        self.index = index
        self.index.hnsw.efSearch = ef_search

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str], *, ef_search: int = 64) -> "AnnIndex":
        from geometry.errors import StoreError

        path, _ = index_paths(run_dir)
        if not path.exists():
            raise StoreError(f"no ANN index at {path}; run `ccpipe-geometry embed {run_dir}` first")
        return cls(_faiss().read_index(str(path)), ef_search=ef_search)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Q x d float32 -> (inner products, rows), each Q x k; -1 rows pad short results."""
        k = min(k, self.ntotal)
        self.index.hnsw.efSearch = max(self.index.hnsw.efSearch, k)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
