"""Geometry benchmark: distance modes, embedding throughput, score training, sphere choice.

    .venv/bin/python bench/bench_geometry.py [--quick]

Prints one block of figures. Everything runs on CPU unless CUDA is present (the distance
figures are always CPU, as the targets are stated for CPU). Wall-clock rates depend on the
machine's load, so each rate is also given per CPU-second of this process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccpipe.malloc import tune_malloc  # noqa: E402
from geometry.analytic import VmfMixtureNoise  # noqa: E402
from geometry.distances import GeodesicConfig, geodesic, upper_bound  # noqa: E402
from geometry.graph import KnnGraph, graph_distance  # noqa: E402
from geometry.metric import SteinMetric, scale_free_lambda  # noqa: E402
from geometry.score_model import ScoreFunction, ScoreModelConfig  # noqa: E402
from geometry.train import TrainConfig, train_score_model  # noqa: E402

D = 384


class Timer:
    def __enter__(self) -> "Timer":
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.w
        self.cpu = time.process_time() - self.c


def rate(n: int, t: Timer) -> str:
    return f"{n / t.wall:9.1f}/s wall  {n / max(t.cpu, 1e-9):9.1f}/CPU-s"


def synthetic_corpus(n: int, seed: int = 0) -> tuple[VmfMixtureNoise, np.ndarray]:
    """384-d unit vectors in 32 vMF clusters (kappa 300: mean cosine to the centre ~0.5,
    like topical clusters of MiniLM embeddings)."""
    vmf = VmfMixtureNoise.random(d=D, k=32, kappa=300.0, sigma=0.02, seed=seed)
    return vmf, vmf.sample_clean(n, np.random.default_rng(seed)).astype(np.float32)


def bench_training(data: torch.Tensor, epochs: int) -> tuple[object, dict]:
    from geometry.train import default_model_config

    cfg = TrainConfig(epochs=epochs, batch_size=256, lr=1e-3, log_every=0, checkpoint_every=0, model=default_model_config(data))
    with Timer() as t:
        res = train_score_model(data, cfg)
    h = res.history[-1]
    return res.net, {
        "epochs": epochs,
        "n_train": int(data.shape[0] * (1 - cfg.val_fraction)),
        "s_per_epoch_wall": t.wall / epochs,
        "samples_per_s": h["samples_per_s"],
        "data_share": h["data_s"] / max(h["data_s"] + h["compute_s"], 1e-9),
        "val_loss": res.val_loss,
    }


def bench_distances(net, data: np.ndarray, quick: bool) -> dict:
    score = ScoreFunction(net)
    # float32 like the document API (GeometryIndex): embeddings and model are float32.
    pts = torch.from_numpy(data[:4096]).float()
    lam = scale_free_lambda(score, pts[:2048].double(), c=1.0, sphere=True)
    m = SteinMetric(score=score, lam=lam, sphere=True)
    g = torch.Generator().manual_seed(1)
    n_up = 512 if quick else 2048
    ia = torch.randint(0, len(pts), (n_up,), generator=g)
    ib = torch.randint(0, len(pts), (n_up,), generator=g)
    x, y = pts[ia], pts[ib]
    out = {"lam": lam, "c": 1.0}
    upper_bound(m, x[:64], y[:64])  # warm-up
    with Timer() as t:
        for lo in range(0, n_up, 256):
            ub = upper_bound(m, x[lo : lo + 256], y[lo : lo + 256], n_points=32)
    out["upper_32pts"] = rate(n_up, t)
    n_geo = 32 if quick else 64
    with Timer() as t:
        geo = geodesic(m, x[:n_geo], y[:n_geo], GeodesicConfig(n_points=32))
    out["geodesic_32pts"] = rate(n_geo, t)
    out["geodesic_converged"] = float(geo.converged.double().mean())
    out["geodesic_iterations"] = geo.iterations
    out["geodesic_remeasured_over_solver_max"] = float((geo.distance / geo.solver_distance).max())
    with Timer() as t:
        geodesic(m, x[:n_geo], y[:n_geo], GeodesicConfig(n_points=32, saddle_probe=0.0, refine=0))
    out["geodesic_32pts_without_probe_and_refine"] = rate(n_geo, t)
    ubg = upper_bound(m, x[:n_geo], y[:n_geo], n_points=32).distance
    out["geodesic_over_upper_median"] = float((geo.distance / ubg).median())
    with Timer() as t:
        graph = KnnGraph.build(m, pts, k=10, n_points=8)
    out["graph_build_4096_nodes_s"] = t.wall
    out["graph_bridges"] = graph.n_bridges
    n_gr = 256
    with Timer() as t:
        graph.node_distances(ia[:n_gr].numpy() % len(pts), ib[:n_gr].numpy() % len(pts))
    out["graph_node_pairs"] = rate(n_gr, t)
    q = torch.from_numpy(data[4096 : 4096 + 64]).float()
    with Timer() as t:
        gd = graph_distance(m, graph, pts, q[:32], q[32:64])
    out["graph_new_points_pairs"] = rate(32, t)
    out["graph_over_upper_median"] = float((gd.distance / upper_bound(m, q[:32], q[32:64]).distance).median())
    return out


def bench_model_sizes(data: np.ndarray) -> dict:
    """Throughput against score-network size and quadrature points (timing only: random
    weights with a non-zero output layer cost what trained ones cost)."""
    from geometry.score_model import ScoreNet

    pts = torch.from_numpy(data[:1024]).float()
    x, y = pts[:512], pts[512:1024]
    out = {}
    for hidden, blocks in ((128, 2), (256, 2)):
        torch.manual_seed(0)
        net = ScoreNet(ScoreModelConfig(dim=D, hidden=hidden, blocks=blocks, sigma_min=0.02, sigma_max=2.0, data_var=1 / D))
        torch.nn.init.normal_(net.out.weight, std=0.05)
        net.eval().requires_grad_(False)
        score = ScoreFunction(net)
        m = SteinMetric(score=score, lam=scale_free_lambda(score, pts.double(), sphere=True), sphere=True)
        if hidden == 256:
            with Timer() as t:
                geodesic(m, x[:32].double(), y[:32].double(), GeodesicConfig(n_points=32))
            out["h256x2 geodesic 32pts float64"] = rate(32, t)
        for p in (16, 32):
            with Timer() as t:
                for lo in range(0, 512, 256):
                    upper_bound(m, x[lo : lo + 256], y[lo : lo + 256], n_points=p)
            out[f"h{hidden}x{blocks} upper {p}pts"] = rate(512, t)
        with Timer() as t:
            geodesic(m, x[:32], y[:32], GeodesicConfig(n_points=32))
        out[f"h{hidden}x{blocks} geodesic 32pts"] = rate(32, t)
    return out


def bench_sphere(vmf: VmfMixtureNoise, net, data: np.ndarray) -> dict:
    """Why curves stay on the sphere: how radial the score is at data points, and what the
    radial part does to straight chords."""
    x = torch.from_numpy(data[:512]).double()
    y = torch.from_numpy(data[512:1024]).double()
    out = {}
    for name, fn in (("exact_vmf_sigma0.02", vmf.with_sigma(0.02).score), ("learned_sigma_min", ScoreFunction(net))):
        with torch.no_grad():
            s = fn(x)
        radial = (s * x).sum(-1)
        out[f"{name}: radial share of |s|^2 (median)"] = float((radial**2 / (s * s).sum(-1)).median())
        out[f"{name}: radial component (median)"] = float(radial.median())
        # Same c = 1 rule for both choices: lam from the full score for chords, from the
        # tangential score for arcs.
        lam_full = scale_free_lambda(fn, x, c=1.0, sphere=False)
        lam_tan = scale_free_lambda(fn, x, c=1.0, sphere=True)
        chord = upper_bound(SteinMetric(score=fn, lam=lam_full), x[:128], y[:128], n_points=32).distance
        arc = upper_bound(SteinMetric(score=fn, lam=lam_tan, sphere=True), x[:128], y[:128], n_points=32).distance
        plain_chord = (x[:128] - y[:128]).norm(dim=-1)
        plain_arc = torch.arccos((x[:128] * y[:128]).sum(-1).clamp(-1, 1))
        out[f"{name}: chord Stein / chord (median)"] = float((chord / plain_chord).median())
        out[f"{name}: arc Stein / arc (median)"] = float((arc / plain_arc).median())
        # How much of the chord's extra length over |x - y| comes from the radial score:
        # the same chord measured with the score's radial part removed at every midpoint.
        def tangential(z: torch.Tensor, fn=fn) -> torch.Tensor:
            u = z / z.norm(dim=-1, keepdim=True)
            s_ = fn(z)
            return s_ - (s_ * u).sum(-1, keepdim=True) * u

        chord_tan = upper_bound(SteinMetric(score=tangential, lam=lam_full), x[:128], y[:128], n_points=32).distance
        out[f"{name}: radial share of the chord's excess length (median)"] = float(((chord - chord_tan) / (chord - plain_chord)).median())
        cos = (x[:128] * y[:128]).sum(-1)
        out[f"{name}: Spearman(chord Stein, -cos)"] = spearman(chord, -cos)
        out[f"{name}: Spearman(arc Stein, -cos)"] = spearman(arc, -cos)
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def corpus_texts(n: int) -> list[str]:
    """Web-page-like texts of mixed lengths (a third beyond the 256-piece window)."""
    rng = np.random.default_rng(0)
    vocab = ("the data pipeline reads crawl files and writes parquet shards with language labels "
             "perplexity buckets and near duplicate clusters while a geometry service embeds every "
             "document trains a score model and answers distance queries about the manifold of "
             "pages recipes football matches galaxies telescopes python packages gardens roses").split()
    texts = []
    for i in range(n):
        n_words = int(rng.choice([40, 120, 600, 2500], p=[0.3, 0.35, 0.2, 0.15]))
        words = rng.choice(vocab, size=n_words)
        lines = [" ".join(words[j : j + 12]).capitalize() + "." for j in range(0, n_words, 12)]
        texts.append(f"Page {i}\n" + "\n".join(lines))
    return texts


def bench_embedding(n: int, reps: int = 3) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from geometry.embed import EmbedConfig, Embedder, embed_run

    texts = corpus_texts(n)
    emb = Embedder(EmbedConfig(progress=False, batch_size=64))
    model = emb.model
    model.encode(texts[:32], batch_size=64)  # warm-up
    out = {"docs": n}
    tmp = Path(tempfile.mkdtemp(prefix="bench-geom-"))
    try:
        run = tmp / "run"
        (run / "en").mkdir(parents=True)
        ids = [f"<urn:uuid:{i:08d}>" for i in range(n)]
        titles = [t.split("\n", 1)[0] for t in texts]
        bodies = [t.split("\n", 1)[1] for t in texts]
        pq.write_table(pa.table({"id": ids, "title": titles, "raw_content": bodies}), run / "en" / "part-00000.parquet")
        plain_t, ours_t, plain_c, ours_c = [], [], [], []
        # Alternate the two so load changes on a shared machine hit both alike; CPU seconds
        # of this process are the less load-sensitive comparison.
        for rep in range(reps):
            with Timer() as t:
                model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
            plain_t.append(t.wall)
            plain_c.append(t.cpu)
            shutil.rmtree(run / "_geometry", ignore_errors=True)
            with Timer() as t:
                embed_run(run, emb.config, embedder=emb)
            ours_t.append(t.wall)
            ours_c.append(t.cpu)
        out["plain_encode_docs_per_s"] = n / min(plain_t)
        out["embed_run_docs_per_s"] = n / min(ours_t)
        out["embed_run_cost_over_plain_wall"] = min(ours_t) / min(plain_t) - 1.0
        out["embed_run_cost_over_plain_cpu"] = min(ours_c) / min(plain_c) - 1.0
        short = [t for t in texts if len(t.split()) < 150]
        with Timer() as t1:
            model.encode(short, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        with Timer() as t2:
            emb.embed(short)
        out["short_docs_only_cost_over_plain_cpu"] = t2.cpu / t1.cpu - 1.0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller samples")
    ap.add_argument("--skip-embedding", action="store_true")
    ap.add_argument("--only", choices=["embedding", "distances"], default=None, help="run one part")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's allocator thresholds as they are (the CLI, service and GeometryIndex raise them)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "load_avg_1m": os.getloadavg()[0], "cuda": torch.cuda.is_available(),
            "malloc_tuned": False if args.default_malloc else tune_malloc()}
    print("machine", json.dumps(info))
    if args.only == "embedding":
        print("embedding", json.dumps(bench_embedding(200), indent=1))
        return
    vmf, data = synthetic_corpus(8000 if args.quick else 20000)
    net, train = bench_training(torch.from_numpy(data), epochs=1 if args.quick else 2)
    print("training", json.dumps(train, indent=1))
    from geometry.train import vmf_validation

    rep = vmf_validation(net, vmf, n=1000, n_paths=32)
    rep["per_sigma"] = {f"{k:.4g}": {n: round(v, 4) for n, v in row.items()} for k, row in rep["per_sigma"].items()}
    print("score vs exact vMF score, E|s_theta - s|^2 / E|s|^2 (384-d, this short training)", json.dumps(rep, indent=1))
    print("distances (384-d, CPU, trained score, sphere)", json.dumps(bench_distances(net, data, args.quick), indent=1))
    print("sphere", json.dumps(bench_sphere(vmf, net, data), indent=1))
    print("model size / quadrature sweep", json.dumps(bench_model_sizes(data), indent=1))
    if not args.skip_embedding:
        print("embedding", json.dumps(bench_embedding(100 if args.quick else 200), indent=1))
    print("load_avg_1m_end", os.getloadavg()[0])


if __name__ == "__main__":
    main()
