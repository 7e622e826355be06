"""One-command start, the command-line client, a schemathesis fuzz run and a load test.

All traffic stays on 127.0.0.1; the fuzz run and the load test are bounded in count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from svc_helpers import TOKEN, free_socket

log = logging.getLogger(__name__)


def test_serve_starts_with_one_command_on_loopback(real_run: Path, doc_ids) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()  # the server binds it itself; a race with another process is unlikely on loopback
    env = {**os.environ, "MY_TOKEN": "abc", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "geometry.cli", "serve", str(real_run), "--port", str(port), "--token-env", "MY_TOKEN", "--max-k", "7"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.5)
        h = httpx.get(f"{url}/v1/health").json()
        assert h["limits"]["max_k"] == 7
        body = {"query": {"id": doc_ids[0]}, "k": 3}
        assert httpx.post(f"{url}/v1/neighbours", json=body).status_code == 401
        r = httpx.post(f"{url}/v1/neighbours", json=body, headers={"Authorization": "Bearer abc"})
        assert r.status_code == 200 and len(r.json()["neighbours"]) == 3
        # Bound to loopback only: the machine's other addresses do not answer.
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True) if shutil.which("ss") else None
        if out is not None and out.stdout.strip():
            local = [line.split()[3] for line in out.stdout.splitlines()]  # State Recv-Q Send-Q Local Peer
            assert local == [f"127.0.0.1:{port}"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_client_cli(server, doc_ids, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from geometry.cli import main

    monkeypatch.setenv("CCPIPE_API_TOKEN", TOKEN)

    def cli(*args: str) -> tuple[int, dict | None]:
        rc = main(["client", "--url", server.url, *args])
        out = capsys.readouterr().out
        return rc, json.loads(out) if out.strip() else None

    rc, out = cli("neighbours", doc_ids[0], "-k", "4", "--candidates", "20")
    assert rc == 0 and len(out["neighbours"]) == 4 and out["mode"] == "upper"
    rc, out = cli("distance", doc_ids[0], "a page about football", "--text-b", "--mode", "upper")
    assert rc == 0 and out["converged"] and out["mode"] == "upper" and out["b"] == "text:a page about football"
    rc, out = cli("path", doc_ids[0], doc_ids[1], "--points", "5")
    assert rc in (0, 3) and out["n_points"] == 5 and (rc == 0) == out["converged"]
    rc, out = cli("document", doc_ids[1])
    assert rc == 0 and out["id"] == doc_ids[1]
    rc, out = cli("embed", "one", "two")
    assert rc == 0 and len(out["vectors"]) == 2
    rc, out = cli("neighbours", "<urn:uuid:missing>")
    assert rc == 2 and out is None
    monkeypatch.setenv("CCPIPE_API_TOKEN", "wrong")
    rc, _ = cli("health")
    assert rc == 0  # health is open
    rc, _ = cli("distance", doc_ids[0], doc_ids[1])
    assert rc == 2


def test_schemathesis_fuzz_finds_no_server_error(server, tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        pytest.skip("schemathesis is not installed: pip install schemathesis")
    cmd = [
        str(st), "run", f"{server.url}/openapi.json",
        "--checks", "not_a_server_error",
        "--max-examples", "15", "--seed", "1", "--no-shrink",
        "--phases", "examples,coverage,fuzzing",
        "-H", f"Authorization: Bearer {server.token}",
        "--request-timeout", "60",
    ]
    # Hostile values (NaN, Infinity, 1e400, lone surrogates) in a third of the bodies each.
    sent = tmp_path / "hostile.log"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "st_hostile_hooks", "ST_HOSTILE_LOG": str(sent),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    kinds = [line.split(" ", 1)[0] for line in sent.read_text().splitlines()]
    assert kinds.count("numbers") >= 20 and kinds.count("strings") >= 20, (kinds.count("numbers"), kinds.count("strings"))
    # The run did exercise the API: every operation was tested, with hundreds of cases.
    assert re.search(r"Tested: (\d+)", proc.stdout).group(1) == str(sum(len(ops) for ops in server.app.openapi()["paths"].values()))  # type: ignore[attr-defined]
    generated = int(re.search(r"(\d+) generated", proc.stdout).group(1))
    assert generated >= 100 and f"{generated} passed" in proc.stdout


def test_load_50_concurrent_clients(server, doc_ids, record_property) -> None:
    """50 clients x 4 requests (distance upper / neighbours k=10 of 100): no errors; p50/p99."""
    n_clients, per_client = 50, 4
    lat: dict[str, list[float]] = {"distance": [], "neighbours": []}
    errors: list[str] = []

    async def client(i: int, c: httpx.AsyncClient) -> None:
        for j in range(per_client):
            a, b = doc_ids[(i + j) % len(doc_ids)], doc_ids[(7 * i + j + 1) % len(doc_ids)]
            if j % 2 == 0:
                kind, path, body = "distance", "/v1/distance", {"a": {"id": a}, "b": {"id": b}, "mode": "upper"}
            else:
                kind, path, body = "neighbours", "/v1/neighbours", {"query": {"id": a}, "k": 10, "candidates": 100}
            t0 = time.perf_counter()
            r = await c.post(path, json=body)
            lat[kind].append(time.perf_counter() - t0)
            if r.status_code != 200 or not r.json().get("converged", False):
                errors.append(f"{path}: {r.status_code} {r.text[:200]}")

    async def main() -> float:
        limits = httpx.Limits(max_connections=n_clients, max_keepalive_connections=n_clients)
        async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=120, limits=limits) as c:
            t0 = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(client(i, c) for i in range(n_clients))), timeout=240)
            return time.perf_counter() - t0

    wall = asyncio.run(main())
    assert errors == []
    total = sum(len(v) for v in lat.values())
    assert total == n_clients * per_client
    for kind, xs in lat.items():
        q = statistics.quantiles(xs, n=100)
        p50, p99 = statistics.median(xs) * 1000, q[98] * 1000
        record_property(f"{kind}_p50_ms", round(p50, 1))
        record_property(f"{kind}_p99_ms", round(p99, 1))
        log.warning("load test (50 clients, shared CPU): %s p50 %.1f ms, p99 %.1f ms", kind, p50, p99)
    log.warning("load test: %d requests in %.2f s = %.1f req/s", total, wall, total / wall)


def test_neighbours_keep_their_latency_during_a_large_embed(server, doc_ids, record_property) -> None:
    """One /v1/embed call at the server's limits (16 texts x 5000 characters) and a client
    asking neighbours of stored documents one after another meanwhile.

    The embedding model has its own thread, so neighbour requests do not queue behind it:
    in the middle 60% of the embed's wall time, many neighbour requests start and finish
    (with one thread for both models, at most one got in there, stuck until a model call
    ended). A text query sent meanwhile waits for the chunk in progress only and is answered
    before the large request. Counts and orderings within one run, not absolute times."""
    from ccpipe.io.dataset import read_rows

    t = read_rows(server.run, ["raw_content", "language"]).to_pydict()
    docs = [" ".join(c.split()) for c, lang in zip(t["raw_content"], t["language"]) if c and lang == "en"]
    big = [((d + " ") * (5000 // (len(d) + 1) + 1))[:5000] for d in (docs * 16)[:16]]
    spans: list[tuple[float, float]] = []  # (start, end) of each neighbour request, from t0
    done: dict[str, float] = {}

    async def main() -> None:
        async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=300) as c:
            t0 = time.perf_counter()

            async def timed(name: str, path: str, body: dict) -> httpx.Response:
                r = await c.post(path, json=body)
                done[name] = time.perf_counter() - t0
                return r

            embed = asyncio.ensure_future(timed("embed", "/v1/embed", {"texts": big}))
            text_q = None
            i = 0
            while not embed.done():
                s = time.perf_counter() - t0
                r = await c.post("/v1/neighbours", json={"query": {"id": doc_ids[i % len(doc_ids)]}, "k": 10, "candidates": 100})
                assert r.status_code == 200, r.text
                spans.append((s, time.perf_counter() - t0))
                i += 1
                if text_q is None:
                    text_q = asyncio.ensure_future(timed("text", "/v1/neighbours", {"query": {"text": "a short query about health"}, "k": 5}))
            r = await embed
            assert r.status_code == 200 and len(r.json()["vectors"]) == 16, r.text[:300]
            assert text_q is not None and (await text_q).status_code == 200

    asyncio.run(main())
    t_embed = done["embed"]
    inside = [e - s for s, e in spans if s >= 0.2 * t_embed and e <= 0.8 * t_embed]
    record_property("embed_s", round(t_embed, 2))
    record_property("neighbours_inside", len(inside))
    log.warning("large embed %.2f s; %d neighbour requests in its middle 60%% (median %.0f ms); text query answered at %.2f s",
                t_embed, len(inside), statistics.median(inside) * 1000 if inside else float("nan"), done["text"])
    assert len(inside) >= 4, f"only {len(inside)} neighbour requests ran inside the embed's middle 60% ({t_embed:.2f} s)"
    assert done["text"] < t_embed
