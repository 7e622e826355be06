"""Pipeline core benchmark: read + line dedup + language id + parquet write.

    .venv/bin/python bench/bench_core.py [--docs 20000]

Prints docs/s per core with 1 and 2 workers, the 2-worker speed-up, peak memory
per worker, and the time of plain gzip decompression of the same file (the floor).
Later stages (perplexity, classifier, quality filters, MinHash) are switched off
here so the figures are the core's alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import shutil
import time

from common import BENCH_DIR, ROOT, bench_wet

from ccpipe.config import load_config
from ccpipe.pipeline import run_pipeline

CORE_ONLY = {  # sections added by later issues, switched off when present
    "perplexity.enabled": False,
    "ref.enabled": False,
    "quality.enabled": False,
    "minhash.enabled": False,
}


def run(wet, workers: int) -> dict:
    out = BENCH_DIR / f"core-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    base = load_config(ROOT / "configs" / "default.yaml")
    sections = {f.name for f in dataclasses.fields(base)}
    overrides = {k: v for k, v in CORE_ONLY.items() if k.split(".")[0] in sections}
    overrides.update({"input.paths": [str(wet)], "output.dir": str(out), "executor.workers": workers,
                      "executor.progress": False})
    cfg = load_config(ROOT / "configs" / "default.yaml", overrides)
    t0 = time.perf_counter()
    stats = run_pipeline(cfg)
    wall = time.perf_counter() - t0
    return {
        "workers": workers,
        "docs": stats.docs_read,
        "kept": stats.docs_kept,
        "wall_s": wall,
        "docs_per_s_per_core": stats.docs_read / wall / workers,
        "peak_rss_mb_per_worker": stats.counters["worker_peak_rss_bytes_max"] / 2**20,
        "phases": {k[len("wall_seconds_"):]: v for k, v in stats.counters.items() if k.startswith("wall_seconds_")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    args = ap.parse_args()
    wet, _ = bench_wet(args.docs)
    t0 = time.perf_counter()
    with gzip.open(wet, "rb") as f:
        while f.read(1 << 22):
            pass
    floor = time.perf_counter() - t0
    one = run(wet, 1)
    two = run(wet, 2)
    print(f"input: {wet} ({wet.stat().st_size / 2**20:.1f} MB, {one['docs']} documents)")
    print(f"plain gzip decompression (floor): {floor:.2f} s = {one['docs'] / floor:,.0f} docs/s")
    for r in (one, two):
        print(
            f"{r['workers']} worker(s): {r['wall_s']:.1f} s, {r['docs_per_s_per_core']:,.0f} docs/s per core, "
            f"peak RSS per worker {r['peak_rss_mb_per_worker']:.0f} MB, kept {r['kept']}, phases {r['phases']}"
        )
    print(f"speed-up with 2 workers: {one['wall_s'] / two['wall_s']:.2f}x (target >= 1.8x)")
    print(f"1 worker vs the decompression floor: {one['wall_s'] / floor:.1f}x the floor's time")


if __name__ == "__main__":
    main()
