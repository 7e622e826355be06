"""URL inputs against a real HTTP server on loopback: backoff, Retry-After, resumed
streams, statuses in messages, ``input.on_error: skip`` (issue 12, item 4)."""

from __future__ import annotations

import http.server
import random
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from ccpipe.config import load_config
from ccpipe.errors import InputError
from ccpipe.io.http import Backoff, HttpFile, HttpStatusError, parse_retry_after
from ccpipe.io.wet import read_wet
from ccpipe.pipeline import run_pipeline
from ccpipe.stats import Stats
from tests.conftest import ROOT

FAST = {"input.retry_base_seconds": 0.01, "input.retry_max_seconds": 0.05}


class Scripted(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` with Range support; ``script[path]`` lists what the next GETs
    get: ``("status", code, retry_after)``, ``("cut", n)`` (the body stops after n
    bytes, the connection closes) or ``"ok"``; the last entry repeats."""

    files: dict[str, bytes] = {}
    script: dict[str, list] = {}
    seen: list = []

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()

    def do_GET(self):  # noqa: N802
        plan = self.script.get(self.path, ["ok"])
        step = plan.pop(0) if len(plan) > 1 else plan[0]
        self.seen.append((self.path, time.monotonic(), self.headers.get("Range"), step))
        body = self.files.get(self.path)
        if step != "ok" and step[0] == "status":
            self.send_response(step[1])
            if step[2] is not None:
                self.send_header("Retry-After", step[2])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if step != "ok" and step[0] == "cut":
            self.wfile.write(body[start : start + step[1]])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(wet_dir):
    handler = type("H", (Scripted,), {"files": {}, "script": {}, "seen": []})
    for name in ("CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz", "CC-MAIN-2024-22-00000.one-page.warc.wet.gz"):
        handler.files[f"/{name}"] = (wet_dir / name).read_bytes()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()
    srv.server_close()


def gets(handler, path: str) -> list:
    return [s for s in handler.seen if s[0] == path]


def test_backoff_grows_exponentially_with_jitter_and_obeys_retry_after():
    b = Backoff(attempts=8, base_seconds=2.0, max_seconds=60.0)
    rng = random.Random(0)
    for n, full in [(1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (9, 60.0)]:
        waits = [b.delay(n, rng=rng) for _ in range(200)]
        assert full / 2 <= min(waits) and max(waits) <= full
        assert max(waits) - min(waits) > full / 4  # jittered, not a fixed wait
    assert b.delay(1, retry_after=30.0, rng=rng) == 30.0  # the server asks for longer: obeyed
    assert b.delay(1, retry_after=0.0, rng=rng) <= 2.0
    assert b.delay(1, retry_after=86400.0, rng=rng) == 600.0  # up to 10 minutes
    assert parse_retry_after("120") == 120.0 and parse_retry_after("soon") is None
    assert 50 < parse_retry_after(formatdate(time.time() + 60, usegmt=True)) <= 60


def test_503_and_429_with_retry_after_then_success(server):
    base, h = server
    path = "/CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz"
    h.script[path] = [("status", 503, "1"), ("status", 429, "1"), "ok"]
    st = Stats()
    docs = list(read_wet(base + path, st, backoff=Backoff(attempts=4, base_seconds=0.01, max_seconds=0.05)))
    assert len(docs) == 25 and not st.errors
    seen = gets(h, path)
    assert [s[3] for s in seen[:3]] == [("status", 503, "1"), ("status", 429, "1"), "ok"]
    # Retry-After: 1 was obeyed although the backoff alone would have waited 0.05 s at most
    assert seen[1][1] - seen[0][1] >= 0.95 and seen[2][1] - seen[1][1] >= 0.95


def test_a_stream_cut_short_resumes_where_it_stopped(server, wet_dir):
    base, h = server
    path = "/CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz"
    # the reader's first request only looks at the gzip magic; the stream is the second
    h.script[path] = ["ok", ("cut", 20_000), ("cut", 30_000), "ok"]
    st = Stats()
    docs = list(read_wet(base + path, st, backoff=Backoff(attempts=3, base_seconds=0.01, max_seconds=0.05)))
    local = list(read_wet(str(wet_dir / path[1:]), Stats()))
    assert [d.raw_content for d in docs] == [d.raw_content for d in local] and len(docs) == 25
    ranges = [s[2] for s in gets(h, path)]
    assert ranges[-2:] == ["bytes=20000-", "bytes=50000-"]  # resumed twice, never from the start


def test_404_is_not_retried_and_a_dead_host_gives_up_with_the_status(server):
    base, h = server
    with pytest.raises(HttpStatusError, match=r"HTTP 404 Not Found \(not retried") as e:
        HttpFile(base + "/missing.wet.gz", Backoff(attempts=5, base_seconds=0.01, max_seconds=0.05)).read(10)
    assert e.value.status == 404 and len(gets(h, "/missing.wet.gz")) == 1
    h.script["/down.wet.gz"] = [("status", 503, None)]
    with pytest.raises(HttpStatusError, match=r"HTTP 503 Service Unavailable; still failing after 3 attempts") as e:
        HttpFile(base + "/down.wet.gz", Backoff(attempts=3, base_seconds=0.01, max_seconds=0.05)).read(10)
    assert e.value.status == 503 and len(gets(h, "/down.wet.gz")) == 3


def _config(out: Path, inputs: list[str], **overrides):
    o = {"input.paths": inputs, "output.dir": str(out), "executor.progress": False, "executor.workers": 1,
         "perplexity.enabled": False, "ref.enabled": False, **FAST}
    o.update(overrides)
    return load_config(None, o)


@pytest.mark.timeout(300)
def test_on_error_skip_counts_a_broken_url_and_the_rest_of_the_run_completes(server, tmp_path, wet_dir):
    base, h = server
    flaky = base + "/CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz"
    h.script["/CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz"] = [("status", 503, "1"), "ok"]
    gone = base + "/gone.warc.wet.gz"
    local = str(wet_dir / "CC-MAIN-2024-22-00000.one-page.warc.wet.gz")
    stats = run_pipeline(_config(tmp_path / "out", [flaky, gone, local], **{"input.on_error": "skip"}))
    assert stats.docs_read == 25 + 1 and stats.identity_holds()
    assert list(stats.file_problems) == [gone]
    assert stats.file_problems[gone].startswith(f"unreadable, skipped (input.on_error=skip): {gone}: HTTP 404 Not Found")
    assert stats.file_errors["input_unreadable"] == 1
    assert len(gets(h, "/gone.warc.wet.gz")) == 1  # a 404 is not asked for again, by the reader or the executor


@pytest.mark.timeout(300)
def test_on_error_fail_stops_the_run_with_the_status_in_one_line(server, tmp_path, wet_dir):
    base, h = server
    gone = base + "/gone.warc.wet.gz"
    local = str(wet_dir / "CC-MAIN-2024-22-00000.one-page.warc.wet.gz")
    with pytest.raises(InputError, match="HTTP 404 Not Found"):
        run_pipeline(_config(tmp_path / "a", [local, gone]))
    assert len(gets(h, "/gone.warc.wet.gz")) == 1  # not retried as a failed task either
    r = subprocess.run([sys.executable, "-m", "ccpipe.cli", "run", local, gone, "-o", str(tmp_path / "b"),
                        "--no-progress", "-w", "1", "--set", "perplexity.enabled=false", "--set", "ref.enabled=false"],
                       capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == 1 and f"{gone}: HTTP 404 Not Found" in errors[0]
