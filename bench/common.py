"""Shared helpers for the benchmarks: the benchmark input and timing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT.parent / "shared" / "tools" / "make_bench_wet.py"
BENCH_DIR = ROOT / "bench-out"


def bench_wet(docs: int = 20000) -> tuple[Path, Path]:
    """The benchmark WET file and its near-duplicate truth, built once and cached."""
    out = BENCH_DIR / f"bench-{docs}.warc.wet.gz"
    truth = BENCH_DIR / f"bench-{docs}.truth.jsonl"
    if not out.is_file() or not truth.is_file():
        if not TOOL.is_file():
            sys.exit(f"{TOOL} is missing: the benchmarks need ../shared beside the project")
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        print(f"building {out} ({docs} documents) ...", flush=True)
        subprocess.run(
            [sys.executable, str(TOOL), "--docs", str(docs), "--out", str(out), "--truth", str(truth)], check=True
        )
    return out, truth
