"""Per-stage and whole-pipeline throughput (docs/s per core) on a WET file.

    python bench/bench_pipeline_stages.py /work/bench-data/bench.warc.wet.gz [--docs N] [--workers 2]

Stages are timed one at a time in this process over the same documents (read
once, language-identified once), as CPU seconds of this process, so the figure
is docs/s per core whatever else runs on the machine. Documents reach the
stages *before* line dedup here (more lines than in a real run: a conservative
figure). The whole pipeline is then run with the default config (models from
``$CCPIPE_HOME``) and reported both per wall-second x worker and per CPU-second
of the workers (sampled with psutil). Needs the default models (``ccpipe models build-defaults``).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path


def cpu_seconds(children: bool = False) -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class TreeCpu:
    """CPU seconds of this process and all its descendants (the executor's workers
    are forkserver grandchildren, which RUSAGE_CHILDREN does not see), sampled
    every ``interval`` seconds with psutil; a worker's last interval may be missed."""

    def __init__(self, interval: float = 0.25) -> None:
        import threading

        import psutil

        self._psutil = psutil
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)

    def _sample(self) -> None:
        for proc in self._psutil.Process().children(recursive=True):
            try:
                t = proc.cpu_times()
                self._seen[proc.pid] = max(self._seen.get(proc.pid, 0.0), t.user + t.system)
            except self._psutil.Error:
                pass

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._sample()

    def __enter__(self) -> "TreeCpu":
        self._self0 = cpu_seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()
        self.seconds = sum(self._seen.values()) + cpu_seconds() - self._self0


def timed(fn, docs) -> tuple[float, float]:
    c0, w0 = cpu_seconds(), time.perf_counter()
    fn(docs)
    return cpu_seconds() - c0, time.perf_counter() - w0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wet")
    ap.add_argument("--docs", type=int, default=0, help="use the first N documents (0 = all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--skip-stages", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="config override for the pipeline runs, e.g. minhash.enabled=false")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from ccpipe.config import load_config, parse_override
    from ccpipe.io.wet import read_wet
    from ccpipe.stats import Stats
    from ccpipe.steps.base import TaskContext
    from ccpipe.steps.langid import LanguageId
    from ccpipe.steps.perplexity import Perplexity
    from ccpipe.steps.quality import GopherQuality
    from ccpipe.steps.ref_classifier import RefClassifier

    t0 = time.perf_counter()
    docs = []
    for d in read_wet(args.wet, Stats()):
        docs.append(d)
        if args.docs and len(docs) >= args.docs:
            break
    n = len(docs)
    results: dict = {"docs": n, "read_seconds": round(time.perf_counter() - t0, 1), "stages": {}}
    ctx = TaskContext(task_id=0, work_dir=Path(tempfile.gettempdir()), stats=Stats())

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")
    lid = LanguageId(model=cfg.langid.model, threshold=cfg.langid.threshold, max_chars=cfg.langid.max_chars)
    perp = Perplexity.from_config(cfg.perplexity)
    ref = RefClassifier(cfg.ref.model, cfg.ref.threshold, False, cfg.ref.max_chars)
    quality = GopherQuality(cfg.quality.rules(), cfg.quality.skip_languages)
    if perp is None:
        sys.exit("no perplexity models: run `ccpipe models build-defaults` first")
    stages = [("lang_id", lid), ("perplexity", perp), ("ref_classifier", ref), ("quality", quality)]
    for name, step in [] if args.skip_stages else stages:
        step.check() if hasattr(step, "check") else None
        step.prepare(ctx)
        if name == "perplexity":  # load every language's models before timing
            for lang in step.model_languages():
                step.scorer(lang)
        cpu, wall = timed(lambda ds: sum(1 for _ in step.run(iter(ds), ctx)), docs)
        results["stages"][name] = {"cpu_s": round(cpu, 2), "docs_per_s_per_core": round(n / cpu, 1)}
        print(f"{name:<16} {n / cpu:9.1f} docs/s per core  ({cpu:.1f} CPU s, {wall:.1f} s wall)", flush=True)
    st = ctx.stats.step("perplexity").counters
    results["perplexity_buckets"] = dict(st)
    results["quality_dropped"] = dict(ctx.stats.step("quality").dropped)

    if not args.skip_pipeline:
        from ccpipe.pipeline import run_pipeline

        with tempfile.TemporaryDirectory(prefix="ccpipe-bench-") as out:
            for label, extra in (("pipeline", {}), ("pipeline+quality", {"quality.enabled": True})):
                o = {"input.paths": [args.wet], "output.dir": f"{out}/{label}", "executor.workers": args.workers,
                     "executor.progress": False, **extra}
                for item in args.set:
                    k, v = parse_override(item)
                    o[k] = v
                w0 = time.perf_counter()
                with TreeCpu() as tree:
                    stats = run_pipeline(load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml", o))
                wall = time.perf_counter() - w0
                cpu = tree.seconds
                read = stats.docs_read
                results[label] = {
                    "docs_read": read, "docs_kept": stats.docs_kept, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                    "docs_per_s_per_core_wall": round(read / (wall * args.workers), 1),
                    "docs_per_s_per_cpu_s": round(read / cpu, 1),
                    "step_seconds": {k: round(v["seconds"], 1) for k, v in stats.to_dict()["steps"].items()},
                    # inside the run (after line dedup): documents in / seconds spent in the step
                    "step_docs_per_s": {k: round(v["docs_in"] / v["seconds"], 1)
                                        for k, v in stats.to_dict()["steps"].items() if v["seconds"] > 0},
                }
                print(f"{label:<16} {read / (wall * args.workers):9.1f} docs/s per core (wall x {args.workers} workers), "
                      f"{read / cpu:.1f} docs per CPU-second; kept {stats.docs_kept}/{read}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
