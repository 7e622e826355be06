"""/docs and /redoc render in a real browser with no internet.

Headless Chromium (Debian's, as in tests/test_audit_browser.py) loads the pages from the
session's server with every host name but 127.0.0.1 unresolvable, so a script or style
from a CDN cannot load even on a machine that has internet; ``--dump-dom`` after a virtual
time budget gives the DOM the page's scripts built. A control page (FastAPI's default
/docs, which loads Swagger UI from a CDN) must come out blank under the same flags, so
the check cannot pass because the blocking does not work.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from svc_helpers import free_socket

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")

V1_PATHS = ["/v1/health", "/v1/stats", "/v1/documents/{doc_id}", "/v1/distance", "/v1/distances", "/v1/neighbours", "/v1/path", "/v1/embed"]


def rendered_dom(url: str, tmp: Path) -> tuple[str, str]:
    """The page's DOM after its scripts ran, offline, and Chromium's log."""
    profile = tmp / f"profile-{abs(hash(url))}"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        # No name resolves but loopback's: the page gets nothing from outside.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=20000", "--dump-dom", url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def test_swagger_ui_renders_offline(server, tmp_path: Path) -> None:
    dom, log = rendered_dom(f"{server.url}/docs", tmp_path)
    shown = re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom)
    assert sorted(shown) == sorted(V1_PATHS), dom[-3000:]
    assert "ERR_NAME_NOT_RESOLVED" not in log


def test_redoc_renders_offline(server, tmp_path: Path) -> None:
    dom, log = rendered_dom(f"{server.url}/redoc", tmp_path)
    assert re.search(r'class="[^"]*\bredoc-wrap\b', dom), dom[-3000:]
    for path in V1_PATHS:
        assert path in dom, path
    assert "ERR_NAME_NOT_RESOLVED" not in log


def test_control_cdn_docs_stay_blank_offline(tmp_path: Path) -> None:
    """FastAPI's own /docs (Swagger UI from a CDN) shows no operation under the same flags."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/v1/ping")
    async def ping() -> dict:
        return {"ok": True}

    sock = free_socket()
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    th = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 30
        while not srv.started:
            assert th.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
        dom, log = rendered_dom(f"http://127.0.0.1:{sock.getsockname()[1]}/docs", tmp_path)
    finally:
        srv.should_exit = True
        th.join(timeout=30)
        sock.close()
    assert "cdn.jsdelivr.net" in dom  # it is the CDN page ...
    assert "opblock-summary-path" not in dom and "/v1/ping" not in dom  # ... and it stayed blank
