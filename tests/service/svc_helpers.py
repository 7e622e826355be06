"""Helpers shared by the service tests (a module, not conftest: conftest names collide)."""

from __future__ import annotations

import socket
from pathlib import Path

TOKEN = "test-token-1234"


def free_socket() -> socket.socket:
    """A listening socket on a free loopback port, handed to uvicorn (no port race)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


def english_shard(run: Path) -> Path:
    """The first English shard (``data/language=en[/bucket=<bucket>]/``)."""
    from ccpipe.io.dataset import shard_files

    return next(p for p in shard_files(run) if "language=en" in p.parts or "language=en" in str(p.parent))
