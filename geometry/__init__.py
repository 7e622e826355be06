"""Data geometry for ccpipe runs: embeddings, a score model and Stein-metric distances.

Core (any score callable ``score(x: B x d) -> B x d``)::

    from geometry import SteinMetric, geodesic, upper_bound, GeodesicConfig
    metric = SteinMetric(score=score, lam=lam, sphere=True)
    res = geodesic(metric, x, y)          # res.distance, res.converged, res.energy

Documents of a run (after ``ccpipe-geometry embed`` and ``train``)::

    gi = GeometryIndex.open(run_dir)
    gi.distance(id_a, id_b), gi.neighbours(id, k=10), gi.path(id_a, id_b)

See docs/geometry.md.
"""

from geometry.distances import DistanceResult, GeodesicConfig, euclidean_lower_bound, geodesic, upper_bound
from geometry.errors import GeometryError, NotConvergedError, StoreError, UnknownDocumentError
from geometry.graph import KnnGraph, graph_distance
from geometry.metric import SteinMetric, scale_free_lambda

__all__ = [
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
    "scale_free_lambda",
    "upper_bound",
]


def __getattr__(name: str):
    # The document-level API pulls in faiss and sentence-transformers; load it on demand.
    if name == "GeometryIndex":
        from geometry.api import GeometryIndex

        return GeometryIndex
    raise AttributeError(name)
