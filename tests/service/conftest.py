"""A real run and a real uvicorn server on loopback, shared by the service tests."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from svc_helpers import TOKEN, english_shard, free_socket

logging.getLogger("faiss.loader").setLevel(logging.WARNING)
logging.getLogger("httpx").setLevel(logging.WARNING)



@dataclass(slots=True)
class LiveServer:
    url: str
    token: str
    run: Path
    app: object

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def start_server(app, sock: socket.socket) -> tuple[object, threading.Thread]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=75))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not th.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, th


@pytest.fixture(scope="session")
def doc_ids(real_run: Path) -> list[str]:
    """Ids of the stored English documents, in file order."""
    t = pq.read_table(english_shard(real_run), columns=["id"])
    return t.column("id").to_pylist()


@pytest.fixture(scope="session")
def server(real_run: Path) -> Iterator[LiveServer]:
    """The app with a token and a 20 ms batching window (so batching is visible in tests)."""
    from geometry.service.batching import BatchConfig
    from geometry.service.config import ServiceConfig
    from geometry.service.server import open_app

    cfg = ServiceConfig(token=TOKEN, max_text_chars=5000, max_k=50, max_batch=16, max_path_points=20, max_body_bytes=200_000,
                        distance_batch=BatchConfig(window_ms=20.0, max_items=64, max_weight=256))
    app = open_app(real_run, cfg)
    sock = free_socket()
    port = sock.getsockname()[1]
    srv, th = start_server(app, sock)
    yield LiveServer(url=f"http://127.0.0.1:{port}", token=TOKEN, run=real_run, app=app)
    srv.should_exit = True  # type: ignore[attr-defined]
    th.join(timeout=30)
    sock.close()
