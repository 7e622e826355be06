"""MinHash near-dup benchmark: signature speed and accuracy against planted truth.

One command (defaults: the 20k-doc benchmark file made by
``../shared/tools/make_bench_wet.py --docs 20000 --truth``)::

    python bench/bench_minhash.py [--wet bench.warc.wet.gz --truth truth.jsonl]
                                  [--run OUT_DIR_OF_A_FINISHED_RUN]

1. speed: signatures of the first ``--speed-docs`` documents in this process
   (one core): docs/s, wall and CPU time; then the same on documents of 400-600
   shingles, and the ratio to datasketch's ``MinHash.bulk`` (SHA-1 of the shingle
   strings) on the first 1,000 documents (``--speed-only`` stops here).
2. accuracy on the raw texts: the shuffle phases (sign -> buckets -> clusters)
   over all documents split into ``--shards`` shards, with and without the
   estimated-Jaccard verification. Recall = planted pairs with 5-gram Jaccard >=
   0.8 whose two documents end in one cluster; precision = removed documents whose
   exact Jaccard (same normalisation) with their cluster's kept document is >= 0.8
   (all of them, or a sample of ``--sample``).
3. with ``--run``: the same figures for a finished pipeline run on the same file,
   from its ``_work/minhash`` audit files (pairs where both documents reached
   MinHash, i.e. survived line dedup and language id); run it with
   ``ccpipe run --keep-work``, since ``_work`` is deleted after a successful run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ccpipe import minhash_core as mc  # noqa: E402
from ccpipe.config import load_config  # noqa: E402
from ccpipe.io.wet import read_wet  # noqa: E402
from ccpipe.stats import Stats  # noqa: E402
from ccpipe.steps import minhash  # noqa: E402

BENCH = Path("/work/bench-data")


def default_input() -> tuple[Path, Path]:
    """The lead's prebuilt 20k file when present, else bench/common.py's (built once)."""
    if (BENCH / "bench.warc.wet.gz").is_file() and (BENCH / "truth.jsonl").is_file():
        return BENCH / "bench.warc.wet.gz", BENCH / "truth.jsonl"
    from bench.common import bench_wet

    return bench_wet(20000)


def load(wet: Path) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    for d in read_wet(str(wet), Stats()):
        ids.append(d.id)
        texts.append(d.raw_content)
    return ids, texts


def _time_signatures(sample: list[str]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    mc.signatures(sample)
    return time.perf_counter() - w0, time.process_time() - c0


def speed(texts: list[str], n: int, bulk_docs: int = 1000) -> dict:
    """Signature speed on the first ``n`` documents, on ``n`` documents of 400-600
    shingles (the document size behind DESIGN.md's datasketch figure), and against
    datasketch's ``MinHash.bulk`` on the first ``bulk_docs`` documents."""
    mc.signatures(texts[:50])  # warm the permutation template
    sample = texts[:n]
    wall, cpu = _time_signatures(sample)
    shingles = float(np.mean([mc.shingle_hashes(t).size for t in sample]))
    out = {"docs": len(sample), "shingles_per_doc": round(shingles), "docs_per_s_wall": round(len(sample) / wall),
           "docs_per_s_cpu": round(len(sample) / cpu), "shingles_per_s_cpu": round(shingles * len(sample) / cpu)}
    mid = [t for t in texts if 400 <= mc.shingle_hashes(t).size <= 600][:n]
    if mid:
        wall, cpu = _time_signatures(mid)
        out["docs_400_600_shingles"] = {"docs": len(mid), "docs_per_s_wall": round(len(mid) / wall),
                                        "docs_per_s_cpu": round(len(mid) / cpu)}
    # datasketch's documented path on the same documents, timed in the same minute:
    # a ratio that the machine's speed of the moment does not move
    ref = sample[:bulk_docs]
    c0 = time.process_time()
    bulk_minhashes(ref)
    bulk = len(ref) / (time.process_time() - c0)
    c0 = time.process_time()
    mc.signatures(ref)
    ours = len(ref) / (time.process_time() - c0)
    out["datasketch_bulk_sha1"] = {"docs": len(ref), "docs_per_s_cpu": round(bulk), "ours_docs_per_s_cpu": round(ours),
                                   "ours_over_bulk": round(ours / bulk, 2)}
    return out


def bulk_minhashes(texts: list[str]) -> list:
    """``MinHash.bulk`` over each text's 5-gram strings (same normalisation), with
    datasketch's default SHA-1 hashfunc and scheme."""
    from datasketch import MinHash

    return MinHash.bulk([mc._shingle_strings(t, 5) for t in texts], num_perm=128)


def sign(texts: list[str], ids: list[str], shards: int, work: Path, bands: int, rows: int, buckets: int) -> None:
    """Phase 1 as the pipeline's sign step does it, over ``shards`` slices."""
    bounds = np.linspace(0, len(texts), shards + 1).astype(int)
    for t in range(shards):
        lo, hi = bounds[t], bounds[t + 1]
        sh = [mc.sorted_unique(x) for x in mc.shingle_hashes_many(texts[lo:hi])]
        sig = mc.signatures_of(sh)
        minhash.write_shard(minhash.shard_dir(work, t), sig, np.array([len(x) for x in texts[lo:hi]]),
                            bands, rows, buckets, ids[lo:hi], sh)


def cluster(work: Path, shards: int, verify: str, threshold: float | None, buckets: int) -> dict[str, tuple[int, int, bool]]:
    for k in range(buckets):
        minhash.bucket_task_fn(work, k, list(range(shards)), verify_threshold=threshold, num_perm=128, verify=verify)
    minhash.cluster_task_fn(work, buckets, list(range(shards)), "first")  # writes clusters/ under work
    return minhash.read_clusters(work)


def evaluate(clusters: dict[str, tuple[int, int, bool]], truth: list[dict], text_of: dict[str, str],
             present: set[str] | None, sample: int, rng: random.Random) -> dict:
    hi = [t for t in truth if t["jaccard_5gram"] >= 0.8]
    if present is not None:
        hi = [t for t in hi if t["a"] in present and t["b"] in present]

    def together(t: dict) -> bool:
        a, b = clusters.get(t["a"]), clusters.get(t["b"])
        return a is not None and b is not None and a[0] == b[0]

    found = sum(together(t) for t in hi)
    mid = [t for t in truth if 0.7 <= t["jaccard_5gram"] < 0.8 and (present is None or {t["a"], t["b"]} <= present)]
    kept_text = {}
    id_of_cluster = {c: i for i, (c, _, kept) in clusters.items() if kept}
    removed = [i for i, (c, _, kept) in clusters.items() if not kept]
    picked = rng.sample(removed, min(sample, len(removed)))
    jac = []
    for i in picked:
        k = id_of_cluster[clusters[i][0]]
        kept_text.setdefault(k, text_of[k])
        jac.append(mc.exact_jaccard(text_of[i], kept_text[k]))
    jac = np.array(jac) if jac else np.zeros(0)
    return {
        "pairs_j>=0.8": len(hi),
        "recall_j>=0.8": round(found / max(1, len(hi)), 4),
        "recall_0.7<=j<0.8": round(sum(together(t) for t in mid) / max(1, len(mid)), 4),
        "removed": len(removed),
        "precision_sampled": len(picked),
        "precision_exact_j>=0.8": round(float((jac >= 0.8).mean()), 4) if jac.size else None,
        "precision_exact_j>=0.7": round(float((jac >= 0.7).mean()), 4) if jac.size else None,
        "removed_exact_j_p5_p50": [round(float(x), 3) for x in np.percentile(jac, [5, 50])] if jac.size else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wet", type=Path, help="default: the 20k-doc benchmark file (built once if absent)")
    ap.add_argument("--truth", type=Path)
    ap.add_argument("--speed-docs", type=int, default=4000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--buckets", type=int, default=16)
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--run", type=Path, help="a finished `ccpipe run` output dir on the same --wet")
    ap.add_argument("--speed-only", action="store_true", help="only part 1 (signature speed)")
    ap.add_argument("--repeat", type=int, default=1, help="time part 1 this many times in this process")
    args = ap.parse_args()
    if args.wet is None:
        args.wet, args.truth = default_input()
    rng = random.Random(0)
    ids, texts = load(args.wet)
    truth = [json.loads(line) for line in args.truth.open()]
    text_of = dict(zip(ids, texts))
    print(f"{len(texts)} documents, {len(truth)} planted pairs "
          f"({sum(t['jaccard_5gram'] >= 0.8 for t in truth)} with Jaccard >= 0.8)")
    for _ in range(args.repeat):
        print("signatures (one core):", json.dumps(speed(texts, args.speed_docs)))
    if args.speed_only:
        return
    cfg = load_config(None).minhash  # the defaults: what `ccpipe run` does
    with tempfile.TemporaryDirectory() as tmp:
        for fnw in (0.5, cfg.false_negative_weight):
            bands, rows = mc.optimal_bands(cfg.threshold, cfg.num_perm, 1 - fnw, fnw)
            print(f"LSH {bands} bands x {rows} rows (false_negative_weight {fnw}), "
                  f"{args.buckets} buckets, {args.shards} shards")
            base = Path(tmp) / f"w{fnw}"
            t0 = time.perf_counter()
            sign(texts, ids, args.shards, base / "signed", bands, rows, args.buckets)
            print(f"  sign: {time.perf_counter() - t0:.1f}s")
            for verify, thr in (("none", None), ("estimate", 0.8 - 2 * (0.8 * 0.2 / 128) ** 0.5), ("exact", 0.8)):
                work = base / verify
                (work / "minhash").mkdir(parents=True)
                for t in range(args.shards):  # the same signatures for every variant
                    (work / "minhash" / f"task-{t:05d}").symlink_to(minhash.shard_dir(base / "signed", t))
                t0 = time.perf_counter()
                c = cluster(work, args.shards, verify, thr, args.buckets)
                took = time.perf_counter() - t0
                print(f"  verify={verify} (>= {thr}): buckets+cluster {took:.1f}s",
                      json.dumps(evaluate(c, truth, text_of, None, args.sample, rng)))
    if args.run:
        work = args.run / "_work"
        present = set()
        for d in sorted((work / "minhash").glob("task-*")):
            import pyarrow.feather as feather

            present.update(feather.read_table(d / "ids.arrow").column("id").to_pylist())
        c_run = minhash.read_clusters(work)
        print(f"pipeline run {args.run} ({len(present)} docs reached MinHash; Jaccard of raw input texts):",
              json.dumps(evaluate(c_run, truth, text_of, present, args.sample, rng)))
        print("pipeline run, Jaccard of the text MinHash saw (after line dedup):", json.dumps(seen_precision(work)))


def seen_precision(work: Path) -> dict:
    """Removed documents vs their cluster's kept one, on the shingle sets the run
    saved (``shingles.npy``: the text after line dedup, which MinHash compared)."""
    import pyarrow.feather as feather

    pos: dict[str, int] = {}
    for d in sorted((work / "minhash").glob("task-*")):
        t = int(d.name.split("-")[1])
        for k, i in enumerate(feather.read_table(d / "ids.arrow").column("id").to_pylist()):
            pos[i] = (t << 32) | k
    clusters = minhash.read_clusters(work)
    pairs = np.array([[pos[i], c] for i, (c, _, kept) in clusters.items() if not kept], dtype=np.uint64)
    if not pairs.size:
        return {"removed": 0}
    jac = minhash._exact_jaccard(work, pairs)
    return {"removed": int(pairs.shape[0]), "precision_j>=0.8": round(float((jac >= 0.8).mean()), 4),
            "j_min": round(float(jac.min()), 3)}


if __name__ == "__main__":
    main()
