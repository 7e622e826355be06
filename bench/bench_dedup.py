"""What dedup keeps, against the planted ground truth: one copy per duplicate group.

    python bench/bench_dedup.py --wet bench-out/bench-20000.warc.wet.gz \
        --truth bench-out/bench-20000.truth.jsonl [--workers 2] [--twice]

Builds the inputs when they are missing (``../shared/tools/make_bench_wet.py``,
``--docs`` and ``--seed``), runs the pipeline with the default config, and
reports, for the planted near-duplicate groups (an original and its copies whose
word-5-gram Jaccard with it is >= ``--min-jaccard``), how many end with exactly
one document, none, or two or more; then each language's head / middle / tail
shares. ``--twice`` also runs the same input given twice and checks that the rows
equal those of the single run. ``--alone`` also runs the input without the planted
copies, to tell the groups whose original line dedup removes on its own (every
line of it recurs in other, different pages) from those a copy made vanish.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ccpipe.io.dataset import read_rows  # noqa: E402


def ensure_input(wet: Path, truth: Path, docs: int, seed: int) -> None:
    if wet.is_file() and truth.is_file():
        return
    tool = ROOT.parent / "shared" / "tools" / "make_bench_wet.py"
    wet.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(tool), "--docs", str(docs), "--seed", str(seed), "--out", str(wet),
                    "--truth", str(truth)], check=True)


def run(inputs: list[Path], out: Path, workers: int, extra: list[str]) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "ccpipe.cli", "run", *map(str, inputs), "-o", str(out), "-w", str(workers),
           "--no-progress", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ccpipe run failed: {proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def groups(truth: Path, min_jaccard: float) -> dict[str, set[str]]:
    g: dict[str, set[str]] = defaultdict(set)
    for line in truth.read_text().splitlines():
        t = json.loads(line)
        if t["jaccard_5gram"] >= min_jaccard:
            g[t["a"]].update((t["a"], t["b"]))
    return g


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wet", type=Path, default=ROOT / "bench-out" / "bench-20000.warc.wet.gz")
    ap.add_argument("--truth", type=Path, default=ROOT / "bench-out" / "bench-20000.truth.jsonl")
    ap.add_argument("--docs", type=int, default=20000, help="documents to generate when --wet is missing")
    ap.add_argument("--seed", type=int, default=0, help="generator seed when --wet is missing")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--min-jaccard", type=float, default=0.8)
    ap.add_argument("--twice", action="store_true", help="also run the input twice and compare the rows")
    ap.add_argument("--alone", action="store_true", help="also run the input without the planted copies")
    ap.add_argument("--set", action="append", default=[], help="config overrides, as for ccpipe run")
    args = ap.parse_args()
    ensure_input(args.wet, args.truth, args.docs, args.seed)
    extra = [a for s in args.set for a in ("--set", s)]
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        once = Path(tmp) / "once"
        sec = run([args.wet], once, args.workers, extra)
        t = read_rows(once, ["id", "raw_content", "language", "bucket"])
        kept = Counter(t.column("id").to_pylist())
        g = groups(args.truth, args.min_jaccard)
        ends = Counter(min(sum(kept[m] for m in members), 2) for members in g.values())
        n = len(g)
        print(f"input: {args.wet} ({sec:.1f} s with {args.workers} workers)")
        print(f"planted groups with Jaccard >= {args.min_jaccard}: {n}")
        print(f"  exactly one document kept: {ends[1]} ({ends[1] / max(n, 1):.1%})")
        print(f"  none kept: {ends[0]}   two or more kept: {ends[2]}")
        langs = Counter(t.column("language").to_pylist())
        by = Counter(zip(t.column("language").to_pylist(), t.column("bucket").to_pylist()))
        print("buckets (head / middle / tail share of each language's kept documents):")
        for lang, total in langs.most_common():
            if by[(lang, "head")] + by[(lang, "middle")] + by[(lang, "tail")] == 0:
                continue
            print(f"  {lang}: {total} docs  " + " / ".join(f"{by[(lang, b)] / total:.3f}" for b in ("head", "middle", "tail")))
        result = {"groups": n, "exactly_one": ends[1], "none": ends[0], "two_or_more": ends[2]}
        if args.twice:
            twice = Path(tmp) / "twice"
            run([args.wet, _copy(args.wet, Path(tmp))], twice, args.workers, extra)
            u = read_rows(twice, ["id", "raw_content"])
            a = sorted(zip(t.column("id").to_pylist(), t.column("raw_content").to_pylist()))
            b = sorted(zip(u.column("id").to_pylist(), u.column("raw_content").to_pylist()))
            result["twice_equals_once"] = a == b
            print(f"input given twice: {len(b)} rows, {'the same rows as once' if a == b else 'DIFFERENT rows from once'}")
        if args.alone:
            copies = {m for a, members in g.items() for m in members if m != a}
            alone = Path(tmp) / "alone"
            run([_without(args.wet, copies, Path(tmp))], alone, args.workers, extra)
            survivors = set(read_rows(alone, ["id"]).column("id").to_pylist())
            own = [a for a in g if a in survivors]
            one = sum(sum(kept[m] for m in g[a]) == 1 for a in own)
            result.update(originals_kept_alone=len(own), exactly_one_of_those=one)
            print(f"without the copies, line dedup and LID keep {len(own)} of the {n} originals; of those groups, "
                  f"{one} ({one / max(len(own), 1):.1%}) end with exactly one document in the full run")
        print(json.dumps(result))
    return 0


def _without(wet: Path, ids: set[str], tmp: Path) -> Path:
    """The WET file minus the records whose WARC-Record-ID is in ``ids``."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.warcwriter import WARCWriter

    dest = tmp / ("without-copies-" + wet.name)
    with open(wet, "rb") as src, open(dest, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        for rec in ArchiveIterator(src):
            if rec.rec_headers.get_header("WARC-Record-ID") not in ids:
                writer.write_record(rec)
    return dest


def _copy(wet: Path, tmp: Path) -> Path:
    dest = tmp / ("copy-" + wet.name)
    dest.write_bytes(wet.read_bytes())
    return dest


if __name__ == "__main__":
    sys.exit(main())
