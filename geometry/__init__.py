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

from geometry.errors import GeometryError, NotConvergedError, StoreError, UnknownDocumentError

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

# Loaded on first use: importing torch (and faiss, sentence-transformers for the
# document-level API) takes seconds, and ``ccpipe-geometry --help`` or a mistyped option
# must answer at once.
_LAZY = {
    "DistanceResult": "geometry.distances",
    "GeodesicConfig": "geometry.distances",
    "euclidean_lower_bound": "geometry.distances",
    "geodesic": "geometry.distances",
    "upper_bound": "geometry.distances",
    "KnnGraph": "geometry.graph",
    "graph_distance": "geometry.graph",
    "SteinMetric": "geometry.metric",
    "scale_free_lambda": "geometry.metric",
    "GeometryIndex": "geometry.api",
    "has_embeddings": "geometry.api",
    "has_score_model": "geometry.api",
    "near_duplicate_clusters": "geometry.api",
    "score_model_report": "geometry.api",
    "Atypicality": "geometry.atypical",
    "run_atypicality": "geometry.atypical",
}


def __getattr__(name: str):
    import importlib

    if name == "DEFAULT_ATYPICALITY":
        return importlib.import_module("geometry.atypical").DEFAULT_METHOD
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geometry' has no attribute {name!r}")
