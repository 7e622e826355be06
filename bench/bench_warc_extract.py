"""WARC main-text extraction: ccpipe's resiliparse path against datatrove's
``WarcReader`` + ``Trafilatura``, side by side on one WARC file; and what
extraction removes against a WET-style conversion.

    python bench/bench_warc_extract.py --datatrove-python /work/dt-venv/bin/python [--pages 3000] [--repeat 1]

1. Builds (once, kept in ``$CCPIPE_HOME/bench/``) a genuine WARC file of HTTP
   response records from the HTML pages of the demo crawl's Debian documentation
   packages (debian-handbook in 26 languages, LibreOffice help in 4; the same
   ``.deb`` files set-up fetched): ``--pages`` pages in a fixed-seed shuffle.
2. Runs, in turn and ``--repeat`` times, each in its own process:

   - ccpipe's reader with its defaults (``extract.engine: resiliparse``, a 5 s
     time limit per page in a helper process): documents from the WARC file;
   - the same with no time limit (extraction in the reading process);
   - with ``--with-ccpipe-trafilatura``, ccpipe's reader with ``extract.engine: trafilatura``;
   - datatrove 0.10.1: ``WarcReader`` then ``Trafilatura`` (its defaults: favour
     precision, 1 s timeout in its sandbox process), one task, one worker.

   Each figure is documents out per CPU-second of the run's work (after its
   imports: the reading process plus its extraction helper or datatrove's
   sandbox process, from ``getrusage``), i.e. docs/s per core; the whole process
   tree's CPU (imports included, sampled with psutil) and wall seconds as context.
3. Prints, over all pages of the file, characters and lines kept by main-text
   extraction (resiliparse ``main_content=True``) against the WET-style
   conversion (every visible text block, ``main_content=False``, as in the demo
   WET files), and a few examples of removed lines.

datatrove is not a ccpipe dependency: it lives in its own virtualenv
(``pip install 'datatrove[io,processing]==0.10.1' lxml_html_clean``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_pipeline_stages import TreeCpu  # noqa: E402

SEED = 16

# Both scripts report the CPU seconds of their own work (after their imports): this
# process plus its reaped children (the extraction helper / datatrove's sandbox).
CPU = """
import resource
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
"""

CCPIPE_SCRIPT = CPU + """
import json, sys, time
from ccpipe import extract
from ccpipe.config import ExtractConfig
from ccpipe.io.wet import read_wet
from ccpipe.stats import Stats
path, engine, timeout = sys.argv[1], sys.argv[2], sys.argv[3]
c0, t0 = cpu(), time.perf_counter()
st = Stats()
n = sum(1 for _ in read_wet(path, st, extract=ExtractConfig(engine=engine,
                                                             timeout_seconds=None if timeout == "none" else float(timeout))))
for ex in extract._SHARED.values():
    ex.close()  # reap the helper so that its CPU time is counted
print(json.dumps({"docs": n, "records": st.docs_read, "dropped": dict(st.steps["extract"].dropped), "cpu": cpu() - c0,
                  "wall": time.perf_counter() - t0}))
"""

DATATROVE_SCRIPT = CPU + """
import json, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import WarcReader
from datatrove.pipeline.extractors import Trafilatura
folder, name, logs = sys.argv[1:4]
count = {"docs": 0, "records": 0}
c0, t0 = cpu(), time.perf_counter()
def counter(key):
    def step(data, rank=0, world_size=1):
        for doc in data:
            count[key] += 1
            yield doc
    return step
LocalPipelineExecutor(pipeline=[WarcReader(folder, glob_pattern=name), counter("records"), Trafilatura(),
                                counter("docs")],
                      tasks=1, workers=1, logging_dir=logs).run()
print(json.dumps({**count, "cpu": cpu() - c0, "wall": time.perf_counter() - t0}))
"""


def build_warc(pages: int, out: Path) -> Path:
    """A WARC of ``pages`` Debian documentation HTML pages (built once)."""
    from _debdocs import DOC_PACKAGES, fetch_debs, iter_pages
    from make_demo_wet import page_url

    from ccpipe.io.warc import write_warc

    path = out / f"debdocs-{pages}.warc.gz"
    if path.is_file():
        return path
    out.mkdir(parents=True, exist_ok=True)
    found = []
    for pkg, deb in fetch_debs(DOC_PACKAGES).items():
        for i, page in enumerate(iter_pages(deb, pkg)):
            if pkg.startswith("libreoffice-help") and i % 5:  # as the demo crawl: every 5th help page
                continue
            found.append((page_url(pkg, page.path, page.locale), "text/html; charset=utf-8", page.html))
    found.sort()
    random.Random(SEED).shuffle(found)
    if len(found) < pages:
        sys.exit(f"only {len(found)} pages in the packages; ask for fewer with --pages")
    write_warc(path, found[:pages])
    return path


def timed(cmd: list[str]) -> tuple[float, float, dict]:
    """(CPU seconds of the process tree, wall seconds, the JSON it printed last)."""
    t0 = time.perf_counter()
    with TreeCpu() as cpu:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} ... failed:\n{proc.stderr[-3000:]}")
    return cpu.seconds, wall, json.loads(proc.stdout.strip().splitlines()[-1])


def boilerplate_report(path: Path, examples: int) -> None:
    from warcio.archiveiterator import ArchiveIterator

    from ccpipe.extract import full_text, process_html, resolve

    main_fn = resolve("resiliparse")
    totals = {"pages": 0, "wet_chars": 0, "main_chars": 0, "wet_lines": 0, "main_lines": 0, "empty": 0}
    shown: list[tuple[str, list[str], int]] = []
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f):
            if rec.rec_type != "response":
                continue
            payload = rec.content_stream().read()
            wet = process_html(payload, "utf-8", full_text).text
            main = process_html(payload, "utf-8", main_fn).text
            totals["pages"] += 1
            totals["wet_chars"] += len(wet)
            totals["main_chars"] += len(main)
            wet_lines, main_lines = wet.split("\n") if wet else [], main.split("\n") if main else []
            totals["wet_lines"] += len(wet_lines)
            totals["main_lines"] += len(main_lines)
            totals["empty"] += not main
            kept = set(main_lines)
            removed = [ln for ln in wet_lines if ln not in kept]
            if removed and len(shown) < examples and totals["pages"] % 97 == 1:
                shown.append((rec.rec_headers.get_header("WARC-Target-URI"), removed, len(wet_lines)))
    t = totals
    print(f"\nboilerplate: main-text extraction against the WET-style conversion, {t['pages']} pages")
    print(f"  characters kept {t['main_chars']:,} of {t['wet_chars']:,} ({t['main_chars'] / t['wet_chars']:.1%})")
    print(f"  lines kept      {t['main_lines']:,} of {t['wet_lines']:,} ({t['main_lines'] / t['wet_lines']:.1%})")
    print(f"  pages left empty by extraction: {t['empty']}")
    for url, removed, n in shown:
        print(f"  e.g. {url}: {len(removed)} of {n} lines removed, first ones: "
              + " | ".join(ln[:50] for ln in removed[:6]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--datatrove-python", default=os.environ.get("CCPIPE_DATATROVE_PYTHON"),
                    help="python of a virtualenv with datatrove 0.10.1 (default $CCPIPE_DATATROVE_PYTHON)")
    ap.add_argument("--with-ccpipe-trafilatura", action="store_true",
                    help="also time ccpipe's reader with extract.engine=trafilatura")
    ap.add_argument("--examples", type=int, default=3, help="examples of removed boilerplate to print")
    args = ap.parse_args()
    from ccpipe.paths import ccpipe_home

    path = build_warc(args.pages, ccpipe_home() / "bench")
    print(f"benchmark WARC: {path} ({path.stat().st_size / 1e6:.1f} MB, {args.pages} HTML responses)")
    runs = {
        "ccpipe resiliparse (5 s limit, helper process)": [sys.executable, "-c", CCPIPE_SCRIPT, str(path),
                                                           "resiliparse", "5"],
        "ccpipe resiliparse (no limit, in process)": [sys.executable, "-c", CCPIPE_SCRIPT, str(path),
                                                      "resiliparse", "none"],
    }
    if args.with_ccpipe_trafilatura:
        runs["ccpipe trafilatura (5 s limit)"] = [sys.executable, "-c", CCPIPE_SCRIPT, str(path), "trafilatura", "5"]
    dt_name = "datatrove WarcReader+Trafilatura"
    figures: dict[str, list[tuple[float, float, dict]]] = {k: [] for k in runs}
    if args.datatrove_python:
        figures[dt_name] = []
    else:
        print("datatrove: not run (give --datatrove-python, a virtualenv with datatrove==0.10.1 and trafilatura)")
    with tempfile.TemporaryDirectory(prefix="bench-warc-") as tmp:
        for r in range(args.repeat):
            for name, cmd in runs.items():
                figures[name].append(timed(cmd))
            if not args.datatrove_python:
                continue
            logs = Path(tmp) / f"logs-{r}"
            figures[dt_name].append(
                timed([args.datatrove_python, "-c", DATATROVE_SCRIPT, str(path.parent), path.name, str(logs)]))
    print("\nwork = after imports, this process and its helper/sandbox; tree = whole process tree, imports included")
    print("records = HTML responses handed to extraction; docs = documents with text out of it")
    print(f"{'run':48s} {'records':>7s} {'docs':>5s} {'work cpu s':>10s} {'work wall s':>11s} {'tree cpu s':>10s} "
          f"{'docs/cpu-s':>10s} {'records/cpu-s':>13s}")
    rate: dict[str, tuple[float, float]] = {}
    for name, rows in figures.items():
        rate[name] = (statistics.median(res["docs"] / res["cpu"] for _, _, res in rows),
                      statistics.median(res["records"] / res["cpu"] for _, _, res in rows))
        tree_cpu, _, res = rows[-1]
        print(f"{name:48s} {res['records']:7d} {res['docs']:5d} {res['cpu']:10.2f} {res['wall']:11.2f} "
              f"{tree_cpu:10.2f} {rate[name][0]:10.1f} {rate[name][1]:13.1f}"
              + (f"   dropped {res['dropped']}" if res.get("dropped") else ""))
    base = rate.get(dt_name)
    for name in runs if base else []:
        print(f"ratio {name} / datatrove: docs/cpu-s {rate[name][0] / base[0]:.1f}x, "
              f"records/cpu-s {rate[name][1] / base[1]:.1f}x")
    boilerplate_report(path, args.examples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
