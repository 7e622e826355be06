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

    def __init__(self, message: str, *, doc_id: str | None = None) -> None:
        super().__init__(message)
        self.doc_id = doc_id
        """The id asked for, so a server can answer without repeating the whole message."""


def clip(value: object, limit: int = 60) -> str:
    """``repr`` of at most ``limit`` characters of user input, for error messages.

    An error never echoes more than a short prefix of what it was sent (a 60 MB id
    must not come back in a 404), and ``repr`` escapes lone surrogates and control
    characters, so the message always encodes as UTF-8."""
    text = value if isinstance(value, str) else str(value)
    head = repr(text[:limit]) if isinstance(value, str) else text[:limit]
    return head if len(text) <= limit else f"{head}... ({len(text)} characters)"
