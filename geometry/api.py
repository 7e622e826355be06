"""Document-level geometry: load store, ANN index and score model once, answer many queries.

``GeometryIndex.open(run_dir)`` is what the CLI and an HTTP service hold on to. Every
answer carries ``converged`` and ``energy``; a distance whose solver did not converge is
returned with ``converged = False`` (and logged), never passed off as a good one.
"""

from __future__ import annotations

import json
import math
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ccpipe.malloc import tune_malloc
from geometry.distances import DistanceResult, GeodesicConfig, geodesic, upper_bound
from geometry.embed import EmbedConfig, Embedder, config_for_store
from geometry.graph import KnnGraph
from geometry.index import AnnIndex
from geometry.metric import SteinMetric, scale_free_lambda
from geometry.score_model import ScoreFunction
from geometry.store import EmbeddingStore, geometry_dir, write_json_atomic
from geometry.train import load_score_model

log = logging.getLogger(__name__)

Mode = Literal["geodesic", "upper", "graph"]
MODES = ("geodesic", "upper", "graph")


@dataclass(slots=True, frozen=True, kw_only=True)
class QueryConfig:
    """How document queries are answered."""

    c: float = 0.3
    """lam = c / median |s|^2 over stored embeddings (tangential score on the sphere). 0.3 is
    the largest c of bench/bench_geometry_text.py's sweep (0.3, 1, 3, 10) whose neighbours
    were never worse than cosine's on its labels and whose changes to them reproduced across
    two training seeds (Jaccard 0.80; 0.76 at c = 1). No c beat cosine outright; see
    docs/geometry.md, "What the metric adds"."""
    sphere: bool = True
    """Keep curves on the unit sphere (see docs/geometry.md for the measurement behind it)."""
    geodesic: GeodesicConfig = GeodesicConfig()
    """Solver settings for mode 'geodesic' and for paths."""
    upper_points: int = 32
    """Quadrature points of the upper-bound mode (and of graph edges); the same as the
    geodesic's, so the two modes' discretisation errors match and geodesic <= upper holds."""
    graph_points: int = 8
    """Quadrature points per kNN-graph edge (edges are short, so few suffice)."""
    candidates: int = 50
    """ANN candidates re-ranked by Stein distance in neighbour queries."""
    graph_k: int = 10
    """Neighbours per node of the kNN graph."""
    lambda_sample: int = 2048
    """Stored vectors used to set lam."""
    dtype: Literal["float64", "float32"] = "float64"
    """Precision of the curve computations. float32 measured 4.7x faster on 384-d geodesics
    (elementwise work over B x P x d dominates) with distances equal to ~1e-7 relative, but
    its last digits then depend on how requests were batched; float64 keeps answers
    reproducible to 1e-12 whatever the batch."""

    def __post_init__(self) -> None:
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        if self.c < 0 or self.upper_points < 2 or self.graph_points < 2 or self.candidates < 1 or self.graph_k < 1:
            raise ValueError("c >= 0, upper_points >= 2, candidates >= 1 and graph_k >= 1 required")


@dataclass(slots=True, frozen=True)
class DocDistance:
    id_a: str
    id_b: str
    distance: float
    converged: bool
    energy: float
    mode: str
    cosine: float = math.nan
    """Cosine similarity of the two embeddings."""
    arc: float = math.nan
    """Great-circle distance between them (what the Stein distance stretches; distance / arc
    is the stretch over cosine, mostly what a Gaussian fit of the embeddings gives)."""


@dataclass(slots=True, frozen=True)
class Neighbour:
    id: str
    distance: float
    converged: bool
    energy: float
    cosine: float


@dataclass(slots=True, frozen=True)
class DocPath:
    id_a: str
    id_b: str
    distance: float
    converged: bool
    energy: float
    points: np.ndarray
    """P x d points of the curve."""
    nearest: list[tuple[str, float]]
    """For every point, the nearest stored document and its cosine similarity."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("points")
        return d


class GeometryIndex:
    """Embeddings, ANN index, score model and metric of one run, loaded once."""

    def __init__(
        self,
        run_dir: Path,
        store: EmbeddingStore,
        ann: AnnIndex,
        metric: SteinMetric,
        config: QueryConfig,
        *,
        score_meta: dict | None = None,
        embed_config: EmbedConfig | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.store = store
        self.ann = ann
        self.metric = metric
        self.config = config
        self.score_meta = score_meta or {}
        self._embedder = Embedder(embed_config or config_for_store(store.meta))
        self._vectors = store.tensor()  # N x d, zero-copy view of the memory map
        self._graph: KnnGraph | None = None

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str], config: QueryConfig | None = None, *, device: str | None = None) -> "GeometryIndex":
        """Open a run that has been embedded and trained (``embed`` then ``train``).

        Also raises this process's allocator thresholds (:func:`ccpipe.malloc.tune_malloc`;
        ``CCPIPE_MALLOC_TUNE=0`` opts out): per-query temporaries are reused, not re-faulted.
        """
        tune_malloc()
        cfg = config or QueryConfig()
        run = Path(run_dir)
        store = EmbeddingStore.open(run)
        ann = AnnIndex.open(run)
        if ann.ntotal < store.count:
            log.warning("ANN index holds %d of %d vectors; rerun `embed` to extend it", ann.ntotal, store.count)
        net, meta = load_score_model(geometry_dir(run) / "score" / "model.pt", device=device)
        score = ScoreFunction(net)
        vecs = store.tensor()
        g = torch.Generator().manual_seed(0)
        sample = torch.randperm(store.count, generator=g)[: cfg.lambda_sample].sort().values
        lam = scale_free_lambda(score, vecs[sample].double(), c=cfg.c, sphere=cfg.sphere) if cfg.c > 0 else 0.0
        metric = SteinMetric(score=score, lam=lam, sphere=cfg.sphere)
        log.info("opened %s: %d documents, lam = %.4g (c = %g)", run, store.count, lam, cfg.c)
        return cls(run, store, ann, metric, cfg, score_meta=meta)

    @property
    def lam(self) -> float:
        return self.metric.lam

    # -- vectors -------------------------------------------------------------------------
    def vectors(self, ids: list[str]) -> Tensor:
        """len(ids) x d float64 copies of the stored embeddings."""
        rows = torch.from_numpy(self.store.rows_of(ids))
        return self._vectors[rows].double()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embed new texts with the store's model and policy (model loads on first call)."""
        return self._embedder.embed(texts)

    # -- distances -----------------------------------------------------------------------
    def distance_vectors(self, x: Tensor, y: Tensor, mode: Mode = "geodesic", *, return_path: bool = False) -> DistanceResult:
        """Distances between batches of unit vectors (B x d each) in any mode, computed in
        ``config.dtype``."""
        dt = getattr(torch, self.config.dtype)
        x, y = x.to(dt), y.to(dt)  # B x d, B x d
        if mode == "geodesic":
            return geodesic(self.metric, x, y, self.config.geodesic, return_path=return_path)
        if mode == "upper":
            return upper_bound(self.metric, x, y, n_points=self.config.upper_points, return_path=return_path)
        if mode == "graph":
            from geometry.graph import graph_distance

            return graph_distance(self.metric, self.graph(), self._vectors, x, y)
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

    def distances(self, pairs: list[tuple[str, str]], mode: Mode = "geodesic") -> list[DocDistance]:
        """Batched document distances; one solver call for all pairs."""
        if not pairs:
            return []
        a = [p[0] for p in pairs]
        b = [p[1] for p in pairs]
        va, vb = self.vectors(a), self.vectors(b)  # B x d each
        if mode == "graph":
            res = self._graph_nodes(self.store.rows_of(a), self.store.rows_of(b))
        else:
            res = self.distance_vectors(va, vb, mode)
        cos = (va * vb).sum(-1).clamp(-1.0, 1.0)  # B
        arc = 2.0 * torch.atan2((va - vb).norm(dim=-1), (va + vb).norm(dim=-1))  # B
        return [
            DocDistance(ia, ib, float(d), bool(c), float(e), mode, float(cs), float(ar))
            for ia, ib, d, c, e, cs, ar in zip(a, b, res.distance.tolist(), res.converged.tolist(), res.energy.tolist(), cos.tolist(), arc.tolist())
        ]

    def distance(self, id_a: str, id_b: str, mode: Mode = "geodesic") -> DocDistance:
        return self.distances([(id_a, id_b)], mode)[0]

    def neighbours(self, doc_id: str, k: int = 10, *, mode: Mode = "upper", candidates: int | None = None) -> list[Neighbour]:
        """The k nearest documents by Stein distance: ANN candidates re-ranked.

        Unconverged candidates rank after converged ones (their distance is not trusted).
        """
        cand = max(candidates or self.config.candidates, k)
        q = self.vectors([doc_id])  # 1 x d
        cos, rows = self.ann.search(q.float().numpy(), cand + 1)
        me = self.store.row_of(doc_id)
        keep = [(int(r), float(c)) for r, c in zip(rows[0], cos[0]) if r >= 0 and r != me]
        if not keep:
            return []
        ids = self.store.ids()
        cand_rows = torch.tensor([r for r, _ in keep])
        y = self._vectors[cand_rows].double()  # C x d
        if mode == "graph":
            res = self._graph_nodes(np.full(len(keep), me), cand_rows.numpy())
        else:
            res = self.distance_vectors(q.expand_as(y), y, mode)
        order = sorted(range(len(keep)), key=lambda i: (not bool(res.converged[i]), float(res.distance[i])))
        return [
            Neighbour(str(ids[keep[i][0]]), float(res.distance[i]), bool(res.converged[i]), float(res.energy[i]), keep[i][1])
            for i in order[:k]
        ]

    def path(self, id_a: str, id_b: str, *, n_points: int | None = None) -> DocPath:
        """The geodesic between two documents and the stored document nearest each point."""
        cfg = self.config.geodesic
        if n_points is not None:
            cfg = GeodesicConfig(**{**asdict(cfg), "n_points": n_points})
        dt = getattr(torch, self.config.dtype)
        x, y = self.vectors([id_a]).to(dt), self.vectors([id_b]).to(dt)  # 1 x d each
        res = geodesic(self.metric, x, y, cfg, return_path=True)
        pts = res.path[0].float().numpy()  # P x d
        cos, rows = self.ann.search(pts, 1)
        ids = self.store.ids()
        nearest = [(str(ids[r]) if r >= 0 else "", float(c)) for r, c in zip(rows[:, 0], cos[:, 0])]
        return DocPath(id_a, id_b, float(res.distance[0]), bool(res.converged[0]), float(res.energy[0]), pts, nearest)

    # -- graph ---------------------------------------------------------------------------
    def _graph_nodes(self, src: np.ndarray, dst: np.ndarray) -> DistanceResult:
        """Graph distances between stored documents, the direct arc counting as an edge
        (see :func:`geometry.graph.graph_distance` for why)."""
        res = self.graph().node_distances(src, dst)
        dt = getattr(torch, self.config.dtype)
        x = self._vectors[torch.from_numpy(np.asarray(src))].to(dt)  # B x d
        y = self._vectors[torch.from_numpy(np.asarray(dst))].to(dt)  # B x d
        direct = upper_bound(self.metric, x, y, n_points=self.config.upper_points)
        d = torch.fmin(res.distance.to(direct.distance), direct.distance)  # B
        return DistanceResult(distance=d, converged=torch.isfinite(d), energy=d * d, mode="graph")

    def graph(self) -> KnnGraph:
        """kNN graph over all stored documents; built once and cached under _geometry/."""
        if self._graph is not None:
            return self._graph
        g = geometry_dir(self.run_dir)
        key = {
            "count": self.store.count,
            "k": self.config.graph_k,
            "n_points": self.config.graph_points,
            "lam": self.lam,
            "sphere": self.metric.sphere,
            "score_step": self.score_meta.get("step"),
            "score_val": self.score_meta.get("val_loss"),
        }
        meta_path, mat_path = g / "graph.json", g / "graph.npz"
        if meta_path.exists() and mat_path.exists() and json.loads(meta_path.read_text()) == json.loads(json.dumps(key)):
            self._graph = KnnGraph.load(str(mat_path), k=self.config.graph_k, n_points=self.config.graph_points)
            return self._graph
        k = min(self.config.graph_k, self.store.count - 1)
        _, nb = self.ann.search(self.store.vectors()[:], k + 1)
        log.info("building kNN graph over %d documents (k = %d)", self.store.count, k)
        self._graph = KnnGraph.build(self.metric, self._vectors, k=k, n_points=self.config.graph_points, neighbours=nb)
        tmp = g / ".graph.tmp.npz"
        self._graph.save(str(tmp))
        os.replace(tmp, mat_path)
        write_json_atomic(meta_path, key)
        return self._graph


# -- run-level figures for reports (the audit reads a run's geometry through these) ----------
def has_embeddings(run_dir: str | os.PathLike[str]) -> bool:
    """The run has been embedded (``ccpipe-geometry embed``)."""
    return (geometry_dir(run_dir) / "embeddings" / "meta.json").is_file()


def has_score_model(run_dir: str | os.PathLike[str]) -> bool:
    """The run has a trained score model (``ccpipe-geometry train``)."""
    return (geometry_dir(run_dir) / "score" / "model.pt").is_file()


def score_model_report(run_dir: str | os.PathLike[str]) -> dict:
    """The trained model's held-out validation: per rung the denoising loss of the model and
    of the affine-Gaussian baseline, the gammas, the metric's sigma and whether held-out data
    confirmed it (see :func:`geometry.train.calibrate`), plus training figures."""
    from geometry.validate import _loss_table

    _, meta = load_score_model(geometry_dir(run_dir) / "score" / "model.pt", device="cpu")
    last = (meta.get("history") or [{}])[-1]
    v = meta.get("validation") or {}
    return {
        "metric_sigma": meta["metric_sigma"],
        "metric_sigma_confirmed": bool(v.get("metric_sigma_confirmed")),
        "rule": v.get("rule", ""),
        "heldout_loss": _loss_table(v) or [],
        "n_train": meta.get("n_train"),
        "n_val": meta.get("n_val"),
        "steps": meta.get("step"),
        "samples_per_s": last.get("samples_per_s"),
    }


def near_duplicate_clusters(run_dir: str | os.PathLike[str], *, cosine: float = 0.95, neighbours: int = 10) -> tuple[list[list[str]], int]:
    """Connected components (size >= 2, largest first) of the graph joining two embedded
    documents when one is among the other's ``neighbours`` nearest (ANN index) and their
    cosine is at least ``cosine``; also the number of neighbour pairs examined."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    store = EmbeddingStore.open(run_dir)
    vecs, ids, n = store.vectors(), store.ids(), store.count
    if n < 2:
        return [], 0
    k = min(neighbours + 1, n)
    try:
        cos, nb = AnnIndex.open(run_dir).search(np.ascontiguousarray(vecs), k)
    except Exception as e:  # noqa: BLE001 - no index: exact search is fine for small runs
        if n > 50_000:
            log.warning("no ANN index (%s) and %d documents: embedding-space clusters skipped", e, n)
            return [], 0
        import faiss

        flat = faiss.IndexFlatIP(vecs.shape[1])
        flat.add(np.ascontiguousarray(vecs, dtype=np.float32))
        cos, nb = flat.search(np.ascontiguousarray(vecs, dtype=np.float32), k)
    src = np.repeat(np.arange(n), nb.shape[1])
    dst, c = nb.ravel(), cos.ravel()
    keep = (dst >= 0) & (dst != src) & (c >= cosine)
    g = coo_matrix((np.ones(int(keep.sum())), (src[keep], dst[keep])), shape=(n, n))
    n_comp, label = connected_components(g, directed=False)
    sizes = np.bincount(label, minlength=n_comp)
    big = [int(c) for c in np.argsort(-sizes, kind="stable") if sizes[c] >= 2]
    return [[str(ids[i]) for i in np.flatnonzero(label == c)] for c in big], int(keep.size)
