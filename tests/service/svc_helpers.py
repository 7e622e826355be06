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
    """The first English shard (partition ``en`` or ``en_<bucket>`` once perplexity exists)."""
    return sorted(run.glob("en*/part-*.parquet"))[0]
