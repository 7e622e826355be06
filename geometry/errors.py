"""Geometry's exceptions; each message says what to do about it."""

from ccpipe.errors import CcpipeError


class GeometryError(CcpipeError):
    """Base class of every error the geometry package raises on purpose."""


class StoreError(GeometryError):
    """The embedding store, index or checkpoint under <run>/_geometry is missing or inconsistent."""


class NotConvergedError(GeometryError):
    """A distance was asked for with ``checked()`` but the solver did not converge."""


class UnknownDocumentError(GeometryError):
    """A document id is not in the embedding store (run ``ccpipe-geometry embed`` first)."""
