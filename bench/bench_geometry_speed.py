"""Upper-bound and geodesic throughput of this tree against another commit, side by side.

    .venv/bin/python bench/bench_geometry_speed.py [--before 82845da] [--rounds 2]

The other commit's ``geometry/`` and ``ccpipe/`` are extracted with ``git archive`` into a
temporary folder; each round runs the old tree then this one, each in its own process with
one torch thread: train two epochs on 6,000 points of a 384-d vMF mixture with that tree's
defaults, then time 1,024 upper bounds (32 points, float32) and 32 geodesics (32 points,
float32 and float64). Prints one JSON line per run and the new / old ratios of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import sys, time, json
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
torch.set_num_threads(1)
from ccpipe.malloc import tune_malloc; tune_malloc()
from geometry.analytic import VmfMixtureNoise
from geometry.distances import GeodesicConfig, geodesic, upper_bound
from geometry.metric import SteinMetric, scale_free_lambda
from geometry.score_model import ScoreFunction
from geometry.train import TrainConfig, default_model_config, train_score_model
vmf = VmfMixtureNoise.random(d=384, k=32, kappa=300.0, sigma=0.02, seed=0)
data = torch.from_numpy(vmf.sample_clean(6000, np.random.default_rng(0))).float()
res = train_score_model(data, TrainConfig(epochs=2, log_every=0, checkpoint_every=0, device="cpu", model=default_model_config(data)))
score = ScoreFunction(res.net)
pts = data[:4096]
m = SteinMetric(score=score, lam=scale_free_lambda(score, pts[:2048].double(), c=1.0, sphere=True), sphere=True)
g = torch.Generator().manual_seed(1)
ia, ib = torch.randint(0, 4096, (1024,), generator=g), torch.randint(0, 4096, (1024,), generator=g)
x, y = pts[ia], pts[ib]
upper_bound(m, x[:64], y[:64])
out = {}
t, c = time.perf_counter(), time.process_time()
for lo in range(0, 1024, 256):
    upper_bound(m, x[lo:lo + 256], y[lo:lo + 256], n_points=32)
out["upper_per_cpu_s"] = 1024 / (time.process_time() - c); out["upper_per_s"] = 1024 / (time.perf_counter() - t)
for name, dt in (("f32", torch.float32), ("f64", torch.float64)):
    t, c = time.perf_counter(), time.process_time()
    r = geodesic(m, x[:32].to(dt), y[:32].to(dt), GeodesicConfig(n_points=32))
    out[f"geodesic_{name}_per_cpu_s"] = 32 / (time.process_time() - c); out[f"geodesic_{name}_per_s"] = 32 / (time.perf_counter() - t)
    out[f"geodesic_{name}_converged"] = float(r.converged.double().mean()); out[f"geodesic_{name}_iterations"] = r.iterations
print(json.dumps(out))
'''


def run(tree: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tree)], capture_output=True, text=True, env=env, timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="82845da", help="git ref to compare with (default: the tree before the skip path)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        arch = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "geometry", "ccpipe"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=arch.stdout, check=True)
        results: dict[str, list[dict]] = {"before": [], "now": []}
        for _ in range(args.rounds):
            for name, tree in (("before", Path(tmp)), ("now", ROOT)):
                r = run(tree)
                results[name].append(r)
                print(name, json.dumps({k: round(v, 2) for k, v in r.items()}), flush=True)
    keys = [k for k in results["now"][0] if k.endswith("per_cpu_s") or k.endswith("per_s")]
    ratio = {k: round(statistics.median(r[k] for r in results["now"]) / statistics.median(r[k] for r in results["before"]), 3) for k in keys}
    print("now / before (medians)", json.dumps(ratio), "load_avg_1m", os.getloadavg()[0])


if __name__ == "__main__":
    main()
