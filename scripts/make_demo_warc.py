#!/usr/bin/env python3
"""Build ccpipe's embedded demo crawl as genuine WARC files of HTML responses.

The same pages as the demo WET crawl (scripts/make_demo_wet.py: every
``debian-handbook`` page in its 26 languages and every 5th LibreOffice help
page in 4, from the ``.deb`` files set-up fetched into
``$CCPIPE_HOME/cache/debs``), in the same fixed-seed order, but kept as HTML:
each page is an HTTP ``200 OK`` response record (``Content-Type: text/html;
charset=utf-8``, WARC-Identified-Payload-Type, WARC-Date = the file's package
mtime) written by warcio, one gzip member per record. ``ccpipe run`` turns them
into text by main-text extraction (``extract`` section of the config), which is
what ``make demo`` runs.

Output in ``$CCPIPE_HOME/demo-warc/`` (or ``--out``):

    demo-0000.warc.gz ...  --shards (default 4) contiguous shards, each with its warcinfo
    warc.paths             the shard file names, one per line (cf. CC's warc.paths.gz)
    .complete              stamp written last (--check tests it)

A rebuild from the same package versions is byte-identical. Skips when already
built, unless --force.
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _debdocs import (DOC_PACKAGES, Stamp, demo_parser, fetch_debs, iter_pages, log,  # noqa: E402
                      remove_stale_shards, shard_bounds)
from make_demo_wet import SEED, page_url, warc_date  # noqa: E402

from ccpipe.io.warc import write_warc  # noqa: E402
from ccpipe.paths import ccpipe_home  # noqa: E402

FORMAT_VERSION = "1"


def collect(lo_stride: int, limit: int | None) -> list[tuple[str, str, bytes, str, str]]:
    pages = []
    for pkg, deb in fetch_debs(DOC_PACKAGES).items():
        n_html = 0
        for page in iter_pages(deb, pkg):
            n_html += 1
            if pkg.startswith("libreoffice-help") and (n_html - 1) % lo_stride:
                continue
            pages.append((page_url(pkg, page.path, page.locale), "text/html; charset=utf-8", page.html, "200 OK",
                          warc_date(page.mtime)))
        log(f"{pkg}: {n_html} html pages")
    pages.sort(key=lambda p: p[0])
    random.Random(SEED).shuffle(pages)
    return pages[:limit] if limit else pages


def main() -> int:
    args = demo_parser(__doc__, "$CCPIPE_HOME/demo-warc").parse_args()
    out = args.out or ccpipe_home() / "demo-warc"
    names = [f"demo-{i:04d}.warc.gz" for i in range(max(1, args.shards))]
    stamp = Stamp(out, f"v{FORMAT_VERSION} shards={len(names)} lo_stride={args.lo_stride} limit={args.limit}",
                  [*names, "warc.paths"])
    if (done := stamp.settled(args, "demo WARC crawl")) is not None:
        return done
    t0 = time.time()
    stamp.begin()
    pages = collect(args.lo_stride, args.limit)
    if not pages:
        raise SystemExit("no pages found")
    bounds = shard_bounds(len(pages), len(names))
    for i, name in enumerate(names):
        write_warc(out / name, pages[bounds[i]:bounds[i + 1]], date=min(p[4] for p in pages))
    remove_stale_shards(out, "demo-*.warc.gz", names)
    (out / "warc.paths").write_text("".join(n + "\n" for n in names))
    size = sum((out / n).stat().st_size for n in names)
    stamp.finish(f"{len(pages)} pages")
    log(f"demo WARC crawl: {len(pages)} HTML responses in {len(names)} files, {size / 1e6:.1f} MB, "
        f"{time.time() - t0:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
