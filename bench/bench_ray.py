"""Local executor vs Ray on the same input and config: wall time and identical rows.

One command (default input: the 20k-doc benchmark file)::

    python bench/bench_ray.py [--wet /work/bench-data/bench.warc.wet.gz] [--cpus 2]

Runs the whole pipeline (default config: line dedup, language id, whatever
models are installed, MinHash) with the local executor and ``--cpus`` workers,
then on a local Ray started with ``num_cpus=--cpus``; prints both wall times,
their ratio with and without Ray's start-up, and whether the output rows
(including ``dup_cluster_id``/``dup_cluster_size``) and the stats are identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ccpipe.config import load_config  # noqa: E402
from ccpipe.pipeline import run_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def table(out: Path) -> list[tuple]:
    from ccpipe.io.dataset import partition_name, read_rows, shard_files

    got = []
    for f in shard_files(out):
        t = read_rows(out, ["id", "raw_content", "language", "dup_cluster_id", "dup_cluster_size"], files=[f])
        got += [(partition_name(f), *r.values()) for r in t.to_pylist()]
    return sorted(got)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wet", type=Path, help="default: the 20k-doc benchmark file (built once if absent)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    args = ap.parse_args()
    if args.wet is None:
        from bench.bench_minhash import default_input

        args.wet = default_input()[0]

    def cfg(out: Path, kind: str):
        return load_config(args.config, {"input.paths": [str(args.wet)], "output.dir": str(out),
                                         "executor.kind": kind, "executor.workers": args.cpus,
                                         "executor.progress": False})

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        local = run_pipeline(cfg(Path(tmp) / "local", "local"))
        t_local = time.perf_counter() - t0

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        t_init = time.perf_counter() - t0
        t0 = time.perf_counter()
        on_ray = run_pipeline(cfg(Path(tmp) / "ray", "ray"))
        t_ray = time.perf_counter() - t0
        ray.shutdown()

        same_rows = table(Path(tmp) / "local") == table(Path(tmp) / "ray")
        same_stats = local.to_dict()["documents"] == on_ray.to_dict()["documents"] and \
            local.to_dict()["dropped"] == on_ray.to_dict()["dropped"]
        phases = {k: v for k, v in on_ray.counters.items() if k.startswith("wall_seconds_")}
        phases_local = {k: v for k, v in local.counters.items() if k.startswith("wall_seconds_")}
    print(json.dumps({
        "docs_read": local.docs_read,
        "docs_kept": local.docs_kept,
        "near_duplicates_removed": local.steps["minhash"].dropped.get("near_duplicate", 0) if "minhash" in local.steps else None,
        "local_s": round(t_local, 1),
        "ray_init_s": round(t_init, 1),
        "ray_s": round(t_ray, 1),
        "ray_over_local": round(t_ray / t_local, 3),
        "ray_with_init_over_local": round((t_ray + t_init) / t_local, 3),
        "same_rows": same_rows,
        "same_stats": same_stats,
        "local_phases_s": phases_local,
        "ray_phases_s": phases,
    }, indent=2))


if __name__ == "__main__":
    main()
