"""Query-service benchmark on loopback: latency, sustained throughput, micro-batching gain.

    .venv/bin/python bench/bench_service.py RUN_DIR [--seconds 4] [--concurrency 1,4,16,50]
    .venv/bin/python bench/bench_service.py --make-run /tmp/bench_run     # builds a small run first
    .venv/bin/python bench/bench_service.py     # (make bench) builds one once under bench-out/service_run

RUN_DIR must be embedded and trained (``ccpipe-geometry embed`` + ``train``) and hold more
than 100 documents (neighbours re-rank 100 candidates). The server runs as a separate
process (``ccpipe-geometry serve``, exactly as deployed) so the load generator does not
share its interpreter; both stay on 127.0.0.1 and every loop is bounded in time and count.

Figures (printed as a table and as JSON on the last line):
  1. latency, one client: distance (mode upper) and neighbours (k=10 of 100 candidates),
     p50/p99 against the targets 50 ms and 300 ms;
  2. sustained requests/s and p50/p99 at each concurrency, with micro-batching on
     (2 ms window, up to 64 requests and 256 pairs per call) and off (one score-model call
     per request), and the mean batch size the server reports at each level, for three
     kinds of request: distance (mode upper, ~1 ms of model time), geodesic (distance,
     mode geodesic: an iterative solve, where the model dominates) and neighbours;
  3. the backend alone (no HTTP): pairs/s of one batched score-model call against one
     call per pair, in modes upper and geodesic.
  4. ``--embed-isolation`` (alone, quick): p50/p99 of neighbour requests (by id, and with a
     short text query) from a few steady clients, first alone, then while one client sends
     large /v1/embed calls back to back (190 texts x 20,000 characters by default: within
     the default limits); what one big embed costs the other clients.
Timings on a shared machine are noisy: compare the ratios, not the absolute numbers. The
load generator shares the machine; its CPU share is printed per level, and where it nears
100% of a core the figure measures the client, not the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

log = logging.getLogger("bench_service")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_run(out: Path) -> Path:
    data = ROOT.parent / "shared" / "data" / "wet"
    files = [data / "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz", data / "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz"]
    py = sys.executable
    subprocess.run([py, "-m", "ccpipe.cli", "run", *map(str, files), "-o", str(out), "--no-progress"], check=True)
    subprocess.run([py, "-m", "geometry.cli", "embed", str(out), "--no-progress"], check=True)
    subprocess.run([py, "-m", "geometry.cli", "train", str(out), "--epochs", "5", "--hidden", "128", "--blocks", "2"], check=True)
    return out


class Server:
    """``ccpipe-geometry serve`` in a subprocess on a free loopback port."""

    def __init__(self, run: Path, *, batch_max: int, window_ms: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "geometry.cli", "serve", str(run), "--port", str(self.port),
               "--batch-max", str(batch_max), "--batch-window-ms", str(window_ms), "--token-env", "BENCH_NO_TOKEN",
               "--max-k", "100"]
        env = {k: v for k, v in os.environ.items() if k != "BENCH_NO_TOKEN"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1] if q < 100 else max(xs)


KINDS = ("distance", "geodesic", "neighbours")


def body(kind: str, ids: list[str], rng: random.Random) -> tuple[str, dict]:
    if kind in ("distance", "geodesic"):
        a, b = rng.sample(ids, 2)
        return "/v1/distance", {"a": {"id": a}, "b": {"id": b}, "mode": "upper" if kind == "distance" else "geodesic"}
    return "/v1/neighbours", {"query": {"id": rng.choice(ids)}, "k": 10, "candidates": 100, "mode": "upper"}


async def load(url: str, kind: str, ids: list[str], *, clients: int, seconds: float, max_requests: int) -> dict:
    """``clients`` closed-loop clients for ``seconds`` (and at most ``max_requests`` in all)."""
    lat: list[float] = []
    errors = 0
    sent = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        before = (await c.get("/v1/stats")).json()["score"]

        async def one(i: int) -> None:
            nonlocal errors, sent
            rng = random.Random(i)
            while time.perf_counter() < stop and sent < max_requests:
                sent += 1
                path, js = body(kind, ids, rng)
                t0 = time.perf_counter()
                r = await c.post(path, json=js)
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200 or not r.json().get("converged", False):
                    errors += 1

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(clients)))
        wall = time.perf_counter() - t0
        client_cpu = (time.process_time() - c0) / wall
        after = (await c.get("/v1/stats")).json()["score"]
    calls, items = after["calls"] - before["calls"], after["items"] - before["items"]
    return {
        "kind": kind, "clients": clients, "requests": len(lat), "errors": errors, "seconds": round(wall, 2),
        "rps": round(len(lat) / wall, 1), "p50_ms": round(pct(lat, 50) * 1000, 1), "p99_ms": round(pct(lat, 99) * 1000, 1),
        "score_calls": calls, "mean_batch": round(items / calls, 2) if calls else 0.0,
        # near 100%: the load generator, not the server, is what limits req/s
        "client_cpu_pct": round(100 * client_cpu),
    }


def run_all(run: Path, levels: list[int], seconds: float, kinds: tuple[str, ...] = KINDS) -> dict:
    import pyarrow.parquet as pq

    ids_path = run / "_geometry" / "embeddings"
    ids = [i for p in sorted(ids_path.glob("ids-*.parquet")) for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    if len(ids) < 101:
        raise SystemExit(f"{run} holds {len(ids)} embedded documents; the neighbour benchmark needs more than 100")
    out: dict = {"run": str(run), "documents": len(ids), "cpu_count": os.cpu_count(), "latency": {}, "load": []}
    for mode, batch_max in (("batched", 64), ("unbatched", 1)):
        log.info("starting server (%s)", mode)
        with Server(run, batch_max=batch_max, window_ms=2.0) as srv:
            # warm-up: first calls pay for lazy imports and allocator growth
            asyncio.run(load(srv.url, "distance", ids, clients=2, seconds=1.0, max_requests=40))
            asyncio.run(load(srv.url, "neighbours", ids, clients=2, seconds=1.0, max_requests=20))
            if "geodesic" in kinds:
                asyncio.run(load(srv.url, "geodesic", ids, clients=2, seconds=1.0, max_requests=20))
            if mode == "batched":
                for kind in ("distance", "neighbours"):
                    out["latency"][kind] = asyncio.run(load(srv.url, kind, ids, clients=1, seconds=seconds, max_requests=400))
            for kind in kinds:
                for c in levels:
                    r = asyncio.run(load(srv.url, kind, ids, clients=c, seconds=seconds, max_requests=20_000))
                    r["batching"] = mode
                    out["load"].append(r)
                    log.info("%s", r)
    return out


async def embed_interference(url: str, ids: list[str], big_texts: list[str], *, seconds: float, id_clients: int = 4,
                             max_embeds: int = 3) -> dict:
    """Neighbour latency alone, then while large embeds run back to back.

    Phase "alone": ``id_clients`` closed-loop clients ask neighbours of a stored document
    (k=10 of 100 candidates) and one client asks neighbours of a short text, for
    ``seconds``. Phase "during embed": the same clients, while one more client sends the
    ``big_texts`` to /v1/embed, again and again until ``seconds`` have passed (at least one
    call, at most ``max_embeds``); only requests that start while an embed is in flight count.
    """
    limits = httpx.Limits(max_connections=id_clients + 2, max_keepalive_connections=id_clients + 2)
    out: dict = {"id_clients": id_clients, "texts": len(big_texts), "chars_per_text": max(map(len, big_texts)),
                 "body_bytes": len(json.dumps({"texts": big_texts}, ensure_ascii=False).encode())}
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as c:

        async def phase(with_embed: bool) -> dict:
            lat: dict[str, list[float]] = {"neighbours_id": [], "neighbours_text": []}
            errors: list[str] = []
            embed_s: list[float] = []
            in_flight = asyncio.Event()
            done = asyncio.Event()

            async def querier(kind: str, i: int) -> None:
                rng = random.Random(i)
                while not done.is_set():
                    q = {"id": rng.choice(ids)} if kind == "neighbours_id" else {"text": f"a short query about topic {rng.randrange(1000)}"}
                    counts = not with_embed or in_flight.is_set()
                    t0 = time.perf_counter()
                    r = await c.post("/v1/neighbours", json={"query": q, "k": 10, "candidates": 100, "mode": "upper"})
                    if counts:  # started while an embed was in flight (or no embed phase)
                        lat[kind].append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        errors.append(f"{kind}: {r.status_code} {r.text[:200]}")

            async def embedder() -> None:
                t_end = time.perf_counter() + seconds
                while len(embed_s) < max_embeds and (not embed_s or time.perf_counter() < t_end):
                    in_flight.set()
                    t0 = time.perf_counter()
                    r = await c.post("/v1/embed", json={"texts": big_texts})
                    embed_s.append(time.perf_counter() - t0)
                    in_flight.clear()
                    if r.status_code != 200:
                        errors.append(f"embed: {r.status_code} {r.text[:200]}")
                done.set()

            async def timer() -> None:
                await asyncio.sleep(seconds)
                done.set()

            tasks = [querier("neighbours_id", i) for i in range(id_clients)] + [querier("neighbours_text", 99)]
            await asyncio.gather(*tasks, embedder() if with_embed else timer())
            res = {k: {"n": len(v), "p50_ms": round(pct(v, 50) * 1000, 1), "p99_ms": round(pct(v, 99) * 1000, 1), "max_ms": round(max(v, default=float("nan")) * 1000, 1)}
                   for k, v in lat.items()}
            res["errors"] = errors[:5]
            if with_embed:
                res["embed_s"] = [round(x, 2) for x in embed_s]
            return res

        await phase(False)  # warm-up (first calls pay for lazy set-up)
        out["alone"] = await phase(False)
        out["during_embed"] = await phase(True)
    return out


def big_texts(run: Path, n: int, chars: int) -> list[str]:
    """``n`` texts of ``chars`` characters made of the run's English documents (repeated to
    length, newlines as spaces: the JSON body stays about n x chars bytes)."""
    from ccpipe.io.dataset import read_rows

    t = read_rows(run, ["raw_content", "language"]).to_pydict()
    docs = [" ".join(c.split()) for c, lang in zip(t["raw_content"], t["language"]) if c and lang == "en"]
    out = []
    for i in range(n):
        d = docs[i % len(docs)]
        out.append(((d + " ") * (chars // (len(d) + 1) + 1))[:chars])
    return out


def report_isolation(res: dict) -> str:
    lines = [f"neighbour requests while /v1/embed runs {res['texts']} texts x {res['chars_per_text']} chars ({res['body_bytes']} bytes) "
             f"({res['id_clients']} clients by id + 1 by text, closed loop)",
             "phase          kind              n    p50 ms    p99 ms    max ms"]
    for ph in ("alone", "during_embed"):
        for kind in ("neighbours_id", "neighbours_text"):
            r = res[ph][kind]
            lines.append(f"{ph:<14} {kind:<15} {r['n']:5d} {r['p50_ms']:9.1f} {r['p99_ms']:9.1f} {r['max_ms']:9.1f}")
    lines.append(f"embed calls took {res['during_embed']['embed_s']} s; errors: {res['alone']['errors'] + res['during_embed']['errors']}")
    return "\n".join(lines)


def backend_scaling(run: Path, sizes: tuple[int, ...] = (1, 8, 32, 64, 256), budget_s: float = 1.5,
                    modes: tuple[str, ...] = ("upper", "geodesic")) -> list[dict]:
    """What a batched call buys inside the model thread, without HTTP: pairs/s of one
    ``distance_vectors(mode)`` call on B pairs, against B calls of one pair."""
    import torch

    from geometry.api import GeometryIndex

    gi = GeometryIndex.open(run)
    v = gi.store.tensor()
    g = torch.Generator().manual_seed(0)
    out = []
    for mode in modes:
        rows_of_mode = []
        for b in sizes:
            rows = torch.randint(0, v.shape[0], (2, b), generator=g)
            x, y = v[rows[0]].double(), v[rows[1]].double()  # B x d each
            gi.distance_vectors(x, y, mode)  # warm-up
            n, t0 = 0, time.perf_counter()
            while (time.perf_counter() - t0 < budget_s or n < 2) and n < 1000:
                gi.distance_vectors(x, y, mode)
                n += 1
            per_call = (time.perf_counter() - t0) / n
            rows_of_mode.append({"mode": mode, "pairs_per_call": b, "ms_per_call": round(per_call * 1000, 2),
                                 "pairs_per_s": round(b / per_call, 1)})
        base = rows_of_mode[0]["pairs_per_s"]
        for r in rows_of_mode:
            r["gain_vs_one_pair_calls"] = round(r["pairs_per_s"] / base, 2)
        out += rows_of_mode
    return out


def report(res: dict) -> str:
    lines = [f"run {res['run']}: {res['documents']} documents, {res['cpu_count']} CPUs (shared: compare ratios)", ""]
    lat = res["latency"]
    d, n = lat["distance"], lat["neighbours"]
    lines.append("latency, one client          p50 ms   p99 ms   target p99   req/s")
    lines.append(f"distance (upper)           {d['p50_ms']:8.1f} {d['p99_ms']:8.1f}       50 ms  {d['rps']:6.1f}  {'OK' if d['p99_ms'] <= 50 else 'MISSED'}")
    lines.append(f"neighbours k=10 of 100     {n['p50_ms']:8.1f} {n['p99_ms']:8.1f}      300 ms  {n['rps']:6.1f}  {'OK' if n['p99_ms'] <= 300 else 'MISSED'}")
    lines.append("")
    lines.append("kind        clients | batched: req/s  p50   p99  mean batch | unbatched: req/s  p50   p99 | gain  | client CPU b/u")
    by = {(r["kind"], r["clients"], r["batching"]): r for r in res["load"]}
    for kind in KINDS:
        for c in sorted({r["clients"] for r in res["load"]}):
            b, u = by.get((kind, c, "batched")), by.get((kind, c, "unbatched"))
            if not b or not u:
                continue
            lines.append(f"{kind:<11} {c:>7} | {b['rps']:13.1f} {b['p50_ms']:5.0f} {b['p99_ms']:5.0f} {b['mean_batch']:11.2f} | "
                         f"{u['rps']:16.1f} {u['p50_ms']:5.0f} {u['p99_ms']:5.0f} | {b['rps'] / u['rps']:.2f}x | "
                         f"{b['client_cpu_pct']:3d}% / {u['client_cpu_pct']:3d}%")
    if res.get("backend"):
        lines.append("\nbackend only (no HTTP): distance_vectors(mode) on B pairs in one call")
        lines.append("mode       pairs/call   ms/call    pairs/s   gain vs one pair per call")
        for r in res["backend"]:
            lines.append(f"{r['mode']:<9} {r['pairs_per_call']:>10} {r['ms_per_call']:9.1f} {r['pairs_per_s']:10.1f}   {r['gain_vs_one_pair_calls']:.2f}x")
    errs = sum(r["errors"] for r in res["load"]) + d["errors"] + n["errors"]
    lines.append(f"\nerrors: {errs}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", nargs="?", help="embedded + trained run (default: bench-out/service_run, built once)")
    p.add_argument("--make-run", metavar="DIR", help="build a small embedded + trained run in DIR first")
    p.add_argument("--seconds", type=float, default=4.0, help="duration of each load level (bounded)")
    p.add_argument("--concurrency", default="1,4,16,50")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help="load kinds: distance (mode upper), geodesic (distance, mode geodesic), neighbours")
    p.add_argument("--embed-isolation", action="store_true",
                   help="only measure neighbour latency alone and during large /v1/embed calls (section 4)")
    p.add_argument("--embed-texts", type=int, default=190, help="texts per large embed call (--embed-isolation)")
    p.add_argument("--embed-chars", type=int, default=20_000, help="characters per text (--embed-isolation)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.make_run:
        run = Path(args.make_run)
        if not (run / "_geometry" / "score" / "model.pt").exists():
            make_run(run)
    elif args.run_dir:
        run = Path(args.run_dir)
    else:
        # `make bench` passes no arguments: build (once) a small run under bench-out/.
        run = ROOT / "bench-out" / "service_run"
        if not (run / "_geometry" / "score" / "model.pt").exists():
            make_run(run)
    if args.embed_isolation:
        import pyarrow.parquet as pq

        ids = [i for f in sorted((run / "_geometry" / "embeddings").glob("ids-*.parquet")) for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]
        texts = big_texts(run, args.embed_texts, args.embed_chars)
        with Server(run, batch_max=64, window_ms=2.0) as srv:
            res = asyncio.run(embed_interference(srv.url, ids, texts, seconds=args.seconds))
        print(report_isolation(res))
        print(json.dumps(res))
        return 0
    levels = [int(x) for x in args.concurrency.split(",")]
    res = run_all(run, levels, args.seconds, tuple(args.kinds.split(",")))
    res["backend"] = backend_scaling(run)
    print(report(res))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
