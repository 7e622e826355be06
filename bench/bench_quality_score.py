"""What quality_score costs: the whole pipeline with the score off and on, side by side.

    python bench/bench_quality_score.py [--docs 2000] [--workers 2] [--repeat 2] [--set KEY=VALUE]

Runs the default config on the benchmark WET file (``bench-out/bench-<docs>.warc.wet.gz``,
built by ../shared/tools/make_bench_wet.py on first use) with ``quality_score.enabled``
false and true, in pairs (off, on), (on, off), ... so that a drift in the load of a
shared machine falls on both alike, each run into a fresh directory. Reports CPU seconds of the
process tree (the figure that does not depend on other users of the machine), wall
seconds and their on/off ratios (medians over the repeats). Because CPU time on a
busy shared machine still varies by 10-30% between identical runs, it also times
the step alone (CPU seconds of this process, best of three) on the rows the first
"on" run wrote, as the step saw them, and states that cost against the CPU
seconds of the run without it: the overhead the side-by-side ratio estimates.
Needs the default models (``ccpipe models build-defaults``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline_stages import TreeCpu  # noqa: E402
from common import ROOT, bench_wet  # noqa: E402


class RunCpu(TreeCpu):
    """``TreeCpu`` counting only the CPU seconds spent during the run: processes that
    outlive one run (multiprocessing's forkserver) start from what they had used."""

    def __enter__(self) -> "RunCpu":
        self._sample()
        self._base = dict(self._seen)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.seconds -= sum(self._base.get(pid, 0.0) for pid in self._seen)


def time_step_alone(run_dir: Path, repeat: int = 3) -> dict:
    """CPU seconds of the quality_score step alone over a run's rows (best of ``repeat``)."""
    from ccpipe.document import Document
    from ccpipe.io.dataset import read_rows
    from ccpipe.steps.quality_score import QualityScore

    rows = read_rows(run_dir, ["raw_content", "language", "ref_score", "perplexity"]).to_pylist()
    docs = []
    for i, r in enumerate(rows):
        d = Document(id=str(i), url="", date_download="", digest="", title="", raw_content=r["raw_content"],
                     language=r["language"])
        d.extras.update(ref_score=r.get("ref_score"), perplexity=r.get("perplexity"))
        docs.append(d)
    step = QualityScore()
    step.prepare(None)
    step.score(docs[0])  # lookup tables built outside the timing, as a worker's first page does
    best = float("inf")
    for _ in range(repeat):
        c0 = time.process_time()
        for d in docs:
            step.score(d)
        best = min(best, time.process_time() - c0)
    return {"docs": len(docs), "cpu_s": round(best, 3), "ms_per_doc": round(1000 * best / len(docs), 4),
            "docs_per_s": round(len(docs) / best, 1)}


def chain_ratio(wet: Path, max_docs: int, repeat: int = 3) -> dict:
    """CPU seconds of the main pass's model steps in this process (language id,
    perplexity, is-reference, then quality_score or not) over the same documents,
    the two chains alternating ``repeat`` times; best of each. Reading, line dedup,
    MinHash and writing are left out, so the ratio is an upper bound on the run's."""
    from ccpipe.config import load_config
    from ccpipe.io.wet import read_wet
    from ccpipe.stats import Stats
    from ccpipe.steps.base import TaskContext, counted
    from ccpipe.steps.langid import LanguageId
    from ccpipe.steps.perplexity import Perplexity
    from ccpipe.steps.quality_score import QualityScore
    from ccpipe.steps.ref_classifier import RefClassifier

    cfg = load_config(ROOT / "configs" / "default.yaml")
    docs = []
    for d in read_wet(str(wet), Stats()):
        docs.append(d)
        if len(docs) >= max_docs:
            break
    base = [LanguageId(cfg.langid.model, cfg.langid.threshold, cfg.langid.max_chars),
            Perplexity.from_config(cfg.perplexity), RefClassifier.from_config(cfg.ref)]
    score = QualityScore.from_config(cfg.quality_score)
    ctx = TaskContext(task_id=0, work_dir=Path(tempfile.gettempdir()), stats=Stats())
    for step in [*base, score]:
        step.prepare(ctx)
    for lang in base[1].model_languages():
        base[1].scorer(lang)
    best = {"off": float("inf"), "on": float("inf")}
    for i in range(repeat):
        for label in ("off", "on") if i % 2 == 0 else ("on", "off"):
            c0 = time.process_time()
            it = iter(docs)
            for step in base + ([score] if label == "on" else []):
                it = counted(step, it, ctx)
            n = sum(1 for _ in it)
            best[label] = min(best[label], time.process_time() - c0)
    return {"docs": len(docs), "docs_out": n, "cpu_s_off": round(best["off"], 2), "cpu_s_on": round(best["on"], 2),
            "ratio": round(best["on"] / best["off"], 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000, help="documents in the benchmark file (20000 = the full one)")
    ap.add_argument("--wet", help="use this WET file instead")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="pairs of runs (off, on)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--chain-docs", type=int, default=2000, help="documents for the in-process chain comparison")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from ccpipe.config import load_config, parse_override
    from ccpipe.models import quality_model_path
    from ccpipe.pipeline import run_pipeline

    if not quality_model_path().is_file():
        sys.exit(f"no quality-score model at {quality_model_path()}: run `ccpipe models build-defaults` first")
    wet = Path(args.wet) if args.wet else bench_wet(args.docs)[0]
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="ccpipe-bench-q-") as tmp:
        for i in range(args.repeat):
            for label in ("off", "on") if i % 2 == 0 else ("on", "off"):  # cancels a drift in load
                o = {"input.paths": [str(wet)], "output.dir": f"{tmp}/{label}-{i}", "executor.workers": args.workers,
                     "executor.progress": False, "quality_score.enabled": label == "on"}
                for item in args.set:
                    k, v = parse_override(item)
                    o[k] = v
                w0 = time.perf_counter()
                with RunCpu() as tree:
                    stats = run_pipeline(load_config(ROOT / "configs" / "default.yaml", o))
                wall = time.perf_counter() - w0
                step = stats.steps.get("quality_score")
                r = {"wall_s": round(wall, 2), "cpu_s": round(tree.seconds, 2), "docs_read": stats.docs_read,
                     "docs_kept": stats.docs_kept,
                     "step_s": round(step.seconds, 2) if step else 0.0, "step_docs": step.docs_in if step else 0}
                runs[label].append(r)
                if label == "on" and i == 0:
                    step_cpu = time_step_alone(Path(o["output.dir"]))
                print(f"run {i} score {label:<3}: {r['cpu_s']:7.1f} CPU s, {r['wall_s']:6.1f} s wall"
                      + (f", step {r['step_s']:.2f} s wall inside the workers" if step else ""), flush=True)

    def med(label, key):
        return statistics.median(r[key] for r in runs[label])

    result = {
        "wet": str(wet), "docs_read": runs["on"][0]["docs_read"], "workers": args.workers, "repeat": args.repeat,
        "runs": runs,
        "cpu_ratio_on_off": round(med("on", "cpu_s") / med("off", "cpu_s"), 4),
        "wall_ratio_on_off": round(med("on", "wall_s") / med("off", "wall_s"), 4),
        "step_alone": step_cpu,
        "step_alone_over_run_off_cpu": round(step_cpu["cpu_s"] / med("off", "cpu_s"), 4),
    }
    print(f"\nquality_score on/off: CPU x{result['cpu_ratio_on_off']:.3f}, wall x{result['wall_ratio_on_off']:.3f} "
          f"(medians of {args.repeat} pairs)")
    print(f"the step alone: {step_cpu['cpu_s']:.2f} CPU s for {step_cpu['docs']} docs "
          f"({step_cpu['ms_per_doc']:.3f} ms/doc, {step_cpu['docs_per_s']:.0f} docs/s per core) = "
          f"{100 * result['step_alone_over_run_off_cpu']:.1f}% of the CPU seconds of the run without it")
    chain = chain_ratio(wet, args.chain_docs)
    result["chain"] = chain
    print(f"main-pass model steps in one process, {chain['docs']} docs, best of 3 each: "
          f"{chain['cpu_s_off']:.2f} CPU s without, {chain['cpu_s_on']:.2f} with quality_score: x{chain['ratio']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
