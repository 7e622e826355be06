"""Data geometry for ccpipe runs: embeddings, a score model and Stein-metric distances.

Core (any score callable ``score(x: B x d) -> B x d``)::

    from geometry import SteinMetric, geodesic, upper_bound, GeodesicConfig
    metric = SteinMetric(score=score, lam=lam, sphere=True)
    res = geodesic(metric, x, y)          # res.distance, res.converged, res.energy

Documents of a run (after ``ccpipe-geometry embed`` and ``train``)::

    gi = GeometryIndex.open(run_dir)
    gi.distance(id_a, id_b), gi.neighbours(id, k=10), gi.path(id_a, id_b)

Run-level figures (what ``ccpipe audit`` reads)::

    run_atypicality(run_dir), near_duplicate_clusters(run_dir), score_model_report(run_dir)

See docs/geometry.md.
"""

from geometry.atypical import DEFAULT_METHOD as DEFAULT_ATYPICALITY
from geometry.atypical import Atypicality, run_atypicality
from geometry.distances import DistanceResult, GeodesicConfig, euclidean_lower_bound, geodesic, upper_bound
from geometry.errors import GeometryError, NotConvergedError, StoreError, UnknownDocumentError
from geometry.graph import KnnGraph, graph_distance
from geometry.metric import SteinMetric, scale_free_lambda

__all__ = [
    "DEFAULT_ATYPICALITY",
    "Atypicality",
    "DistanceResult",
    "GeodesicConfig",
    "GeometryError",
    "GeometryIndex",
    "KnnGraph",
    "NotConvergedError",
    "SteinMetric",
    "StoreError",
    "UnknownDocumentError",
    "euclidean_lower_bound",
    "geodesic",
    "graph_distance",
    "has_embeddings",
    "has_score_model",
    "near_duplicate_clusters",
    "run_atypicality",
    "score_model_report",
    "scale_free_lambda",
    "upper_bound",
]


_API = ("GeometryIndex", "has_embeddings", "has_score_model", "near_duplicate_clusters", "score_model_report")


def __getattr__(name: str):
    # The document-level API pulls in faiss and sentence-transformers; load it on demand.
    if name in _API:
        from geometry import api

        return getattr(api, name)
    raise AttributeError(name)
