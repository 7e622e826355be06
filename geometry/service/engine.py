"""The service's query engine: a :class:`GeometryIndex` behind micro-batchers.

Requests are validated and their document ids resolved to vectors first (an unknown id
fails its own request only); then everything that needs a model goes through a batcher:

* ``embed``: texts -> one ``Embedder`` call per batch;
* ``score``: (x, y, mode) pair blocks from distance and neighbour requests -> one
  ``distance_vectors`` call per mode per batch, so the score model sees one large batch.

Graph-mode queries between stored documents use the graph's exact node distances and do
not need the score model at query time, so they bypass the batcher.

Each model has its own worker thread (one caller at a time per model). Embedding texts
costs far more than a distance (a 256-word-piece transformer pass per text against one
small MLP pass per pair): on one shared thread, a large ``/v1/embed`` call held every
distance and neighbour request behind it for seconds. With two threads, requests between
stored documents never wait for the sentence-transformer, and a large embed request is
cut into chunks of ``ServiceConfig.embed_chunk`` texts submitted one after the other, so
the texts of other requests (text queries, small embeds) get in between its chunks instead
of queueing behind all of it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor

from ccpipe.io.dataset import partition_name, partition_values
from geometry.api import GeometryIndex
from geometry.embed import MODEL_NAME
from geometry.service.batching import MicroBatcher
from geometry.service.config import ServiceConfig

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class PairBlock:
    """Pairs (x_b, y_b) of one request to measure in one mode."""

    x: Tensor  # B x d float64
    y: Tensor  # B x d float64
    mode: str


@dataclass(slots=True, frozen=True)
class PairResult:
    distance: list[float]
    converged: list[bool]
    energy: list[float]


def finite_or_none(v: float) -> float | None:
    """JSON has no NaN/Inf: a non-finite number becomes null (and its pair is unconverged)."""
    return v if math.isfinite(v) else None


def label(ref_id: str | None, text: str | None) -> str:
    return ref_id if ref_id is not None else "text:" + (text or "")[:40]


class QueryEngine:
    """Loads the run once; answers queries with batched model calls."""

    def __init__(self, index: GeometryIndex, config: ServiceConfig) -> None:
        self.gi = index
        self.config = config
        # One thread per model; see the module docstring.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-model")
        self.embed_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-model")
        self.score_batcher: MicroBatcher[PairBlock, PairResult] = MicroBatcher(self._score_batch, self.executor, config.distance_batch, name="score",
                                                                                 weight=lambda b: int(b.x.shape[0]))
        self.embed_batcher: MicroBatcher[str, np.ndarray] = MicroBatcher(self._embed_batch, self.embed_executor, config.embed_batch, name="embed")
        self._shard_of: dict[str, str] | None = None

    # -- life cycle ----------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the sentence-transformer and run the score model once, before serving."""
        self.gi.embed_texts(["warm up"])
        if self.gi.store.count >= 2:
            ids = [str(i) for i in self.gi.store.ids()[:2]]
            self.gi.distance(ids[0], ids[1], mode="upper")

    def start(self) -> None:
        self.score_batcher.start()
        self.embed_batcher.start()

    async def stop(self) -> None:
        await self.score_batcher.stop()
        await self.embed_batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.embed_executor.shutdown(wait=False, cancel_futures=True)

    # -- backends (run on the model thread) ----------------------------------------------
    def _embed_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        vecs = self.gi.embed_texts(list(texts))  # T x d
        return list(vecs)

    def _score_batch(self, blocks: Sequence[PairBlock]) -> list[PairResult]:
        out: list[PairResult | None] = [None] * len(blocks)
        for mode in sorted({b.mode for b in blocks}):
            idx = [i for i, b in enumerate(blocks) if b.mode == mode]
            x = torch.cat([blocks[i].x for i in idx])  # P x d, all pairs of this mode
            y = torch.cat([blocks[i].y for i in idx])  # P x d
            res = self.gi.distance_vectors(x, y, mode)  # type: ignore[arg-type]
            d, c, e = res.distance.tolist(), res.converged.tolist(), res.energy.tolist()
            lo = 0
            for i in idx:
                hi = lo + blocks[i].x.shape[0]
                out[i] = PairResult(d[lo:hi], [bool(v) for v in c[lo:hi]], e[lo:hi])
                lo = hi
        return out  # type: ignore[return-value]

    # -- vectors ---------------------------------------------------------------------------
    async def embed(self, texts: list[str]) -> np.ndarray:
        """T x d float32 unit vectors; every text is one item of the embed batcher.

        A request of more than ``embed_chunk`` texts is embedded chunk after chunk, at a
        lower priority: the texts of smaller requests (text queries, small embeds) go
        before its next chunk, in batches of their own, so they wait for one chunk at most."""
        step = self.config.embed_chunk
        prio = 0 if len(texts) <= step else 1
        vecs: list[np.ndarray] = []
        for lo in range(0, len(texts), step):
            vecs.extend(await asyncio.gather(*(self.embed_batcher.submit(t, priority=prio) for t in texts[lo : lo + step])))
        return np.stack(vecs)

    async def resolve(self, ids: list[str | None], texts: list[str | None]) -> Tensor:
        """Vectors (B x d float64) of references that are ids or texts (same length lists).

        Ids are looked up first, so an unknown id fails before any model time is spent.
        """
        known = [i for i in ids if i is not None]
        id_vecs = self.gi.vectors(known) if known else None  # raises UnknownDocumentError
        want = [t for t in texts if t is not None]
        text_vecs = torch.from_numpy(await self.embed(want)).double() if want else None
        rows: list[Tensor] = []
        ki = ti = 0
        for i in ids:
            if i is not None:
                rows.append(id_vecs[ki])  # type: ignore[index]
                ki += 1
            else:
                rows.append(text_vecs[ti])  # type: ignore[index]
                ti += 1
        return torch.stack(rows)  # B x d

    # -- queries ---------------------------------------------------------------------------
    async def distances(self, a_ids: list[str | None], a_texts: list[str | None], b_ids: list[str | None], b_texts: list[str | None], mode: str) -> PairResult:
        if mode == "graph" and None not in a_ids and None not in b_ids:
            loop = asyncio.get_running_loop()
            res = await loop.run_in_executor(self.executor, self.gi.distances, list(zip(a_ids, b_ids)), "graph")
            return PairResult([r.distance for r in res], [r.converged for r in res], [r.energy for r in res])
        x = await self.resolve(a_ids, a_texts)
        y = await self.resolve(b_ids, b_texts)
        return await self.score_batcher.submit(PairBlock(x, y, mode))

    async def neighbours(self, doc_id: str | None, text: str | None, k: int, mode: str, candidates: int) -> list[dict]:
        gi = self.gi
        if mode == "graph" and doc_id is not None:
            loop = asyncio.get_running_loop()
            res = await loop.run_in_executor(self.executor, lambda: gi.neighbours(doc_id, k, mode="graph", candidates=candidates))
            return [{"id": n.id, "distance": n.distance, "converged": n.converged, "energy": n.energy, "cosine": n.cosine} for n in res]
        q = await self.resolve([doc_id], [text])  # 1 x d
        cand = max(candidates, k)
        # faiss releases the GIL; a worker thread keeps the event loop free meanwhile.
        cos, rows = await asyncio.to_thread(gi.ann.search, q.float().numpy(), cand + 1)
        me = gi.store.row_of(doc_id) if doc_id is not None else -1
        keep = [(int(r), float(c)) for r, c in zip(rows[0], cos[0]) if r >= 0 and r != me][:cand]
        if not keep:
            return []
        cand_rows = torch.tensor([r for r, _ in keep])
        y = gi.store.tensor()[cand_rows].double()  # C x d
        res = await self.score_batcher.submit(PairBlock(q.expand_as(y), y, mode))
        ids = gi.store.ids()
        # Unconverged candidates rank after converged ones: their distance is not trusted.
        order = sorted(range(len(keep)), key=lambda i: (not res.converged[i], _nan_last(res.distance[i])))
        return [
            {"id": str(ids[keep[i][0]]), "distance": res.distance[i], "converged": res.converged[i], "energy": res.energy[i], "cosine": keep[i][1]}
            for i in order[:k]
        ]

    async def path(self, id_a: str, id_b: str, n_points: int | None):
        self.gi.vectors([id_a, id_b])  # unknown ids fail here, not on the model thread
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: self.gi.path(id_a, id_b, n_points=n_points))

    # -- documents -------------------------------------------------------------------------
    def shard_of(self, doc_id: str) -> str:
        """Shard (relative path) holding a stored document; raises UnknownDocumentError."""
        self.gi.store.row_of(doc_id)
        if self._shard_of is None:
            root = self.gi.store.root
            table: dict[str, str] = {}
            for i in range(int(self.gi.store.meta["segments"])):
                t = pq.read_table(root / f"ids-{i:05d}.parquet", columns=["id", "shard"])
                table.update(zip(t.column("id").to_pylist(), t.column("shard").to_pylist()))
            self._shard_of = table
        return self._shard_of[doc_id]

    def document(self, doc_id: str, *, with_text: bool) -> tuple[str, dict]:
        shard = self.shard_of(doc_id)
        row = _read_row(str(Path(self.gi.run_dir) / shard), doc_id)
        if not with_text:
            row.pop("raw_content", None)
        return partition_name(Path(shard)), row


def _nan_last(v: float) -> float:
    return v if math.isfinite(v) else math.inf


@lru_cache(maxsize=256)
def _read_row_cached(path: str, doc_id: str) -> tuple[tuple[str, object], ...]:
    t = pq.read_table(path, filters=[("id", "==", doc_id)])
    if t.num_rows == 0:
        from geometry.errors import StoreError

        raise StoreError(f"document {doc_id!r} is in the embedding store but not in {path}; was the run rewritten? re-embed it")
    row = t.slice(0, 1).to_pylist()[0]
    for key, value in partition_values(Path(path)).items():  # hive: language and bucket are folder names
        row.setdefault(key, value)
    return tuple((k, _jsonable(v)) for k, v in row.items())


def _read_row(path: str, doc_id: str) -> dict:
    return dict(_read_row_cached(path, doc_id))


def _jsonable(v: object) -> object:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if hasattr(v, "isoformat"):
        return v.isoformat()  # type: ignore[union-attr]
    return v
