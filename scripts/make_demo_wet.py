#!/usr/bin/env python3
"""Build ccpipe's embedded demo crawl: genuine WET files from real HTML pages.

Input: the HTML pages of Debian documentation packages (fetched with
``apt-get download`` into ``$CCPIPE_HOME/cache/debs``, never installed):

* ``debian-handbook``: every page, in all of its 26 languages (ar, ca, cs, da,
  de, el, en, es, fa, fr, hr, id, it, ja, ko, nb, nl, pl, pt, ro, ru, sv, tr,
  vi, zh-CN, zh-TW); untranslated paragraphs stay English, as on the web;
* ``libreoffice-help-{en-us,fr,de,es}``: every ``--lo-stride``-th page (default 5).

Each page is turned into text with resiliparse *without* main-content
extraction, so navigation boilerplate ("Précédent", "Help content debug info",
tables of contents, ...) stays in, as in Common Crawl's WET files; the
pipeline's line-level dedup is expected to remove it.

Output in ``$CCPIPE_HOME/demo/`` (or ``--out``):

    demo.warc.wet.gz          all records: warcinfo, then one conversion record per page
    demo-0000.warc.wet.gz ... the same records split into --shards (default 4) contiguous
                              shards, each starting with its own warcinfo, like CC segments
    wet.paths                 the shard file names, one per line (cf. CC's wet.paths.gz)
    labels.tsv                url, language of the page's path, package, title: ground truth
                              for checking language identification
    .complete                 stamp written last (--check tests it)

Every file is a real WET: WARC/1.0 records written by warcio's
``WARCWriter(gzip=True)`` (one gzip member per record), conversion records
carrying WARC-Target-URI, WARC-Date, WARC-Record-ID, WARC-Refers-To,
WARC-Block-Digest (sha1, base32, as Common Crawl), Content-Type text/plain
and Content-Length; the body's first line is the page title. Record ids
are uuid5 of the URL and dates are the files' package mtimes, and the page
order is a fixed-seed shuffle, so a rebuild from the same package versions
is byte-identical. Skips when already built, unless --force.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _debdocs import (DOC_PACKAGES, Stamp, deb_version, demo_parser, fetch_debs, html_to_text,  # noqa: E402
                      iter_pages, log, remove_stale_shards, shard_bounds)

from ccpipe.paths import demo_dir  # noqa: E402

FORMAT_VERSION = "1"
SEED = 20221
COMBINED = "demo.warc.wet.gz"
NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://ccpipe.invalid/demo")


def page_url(package: str, path: str, locale: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if package == "debian-handbook":
        return f"https://debian-handbook.info/browse/{locale}/stable/{name}"
    # usr/share/libreoffice/help/<lang>/text/... -> help.libreoffice.org/7.4/<lang>/text/...
    rel = path.split("usr/share/libreoffice/help/", 1)[-1]
    return f"https://help.libreoffice.org/7.4/{rel}"


def warc_date(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def block_digest(body: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(body).digest()).decode("ascii")


def make_body(title: str, text: str) -> bytes:
    lines = [" ".join(l.split()) for l in text.splitlines()]
    lines = [l for l in lines if l]
    return ("\n".join([title, *lines]) + "\n").encode("utf-8")


def collect(lo_stride: int, limit: int | None) -> list[dict]:
    debs = fetch_debs(DOC_PACKAGES)
    docs = []
    for pkg, deb in debs.items():
        n_html = 0
        for page in iter_pages(deb, pkg):
            n_html += 1
            if pkg.startswith("libreoffice-help") and (n_html - 1) % lo_stride:
                continue
            title, text = html_to_text(page.html, main_content=False)
            body = make_body(title, text)
            if len(body) - len(title) < 40:  # nothing but a title
                continue
            url = page_url(pkg, page.path, page.locale)
            docs.append({
                "url": url, "lang": page.lang, "locale": page.locale, "package": pkg,
                "version": page.version, "title": title, "date": warc_date(page.mtime), "body": body,
            })
        log(f"{pkg} {deb_version(deb)}: {n_html} html pages")
    docs.sort(key=lambda d: d["url"])
    random.Random(SEED).shuffle(docs)
    return docs[:limit] if limit else docs


def write_wet(path: Path, docs: list[dict], info: dict[str, str]) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        w = WARCWriter(f, gzip=True, warc_version="1.0")
        payload = "".join(f"{k}: {v}\r\n" for k, v in info.items()).encode("utf-8")
        first_date = min(d["date"] for d in docs)
        headers = StatusAndHeaders("", [
            ("WARC-Type", "warcinfo"),
            ("WARC-Date", first_date),
            ("WARC-Filename", path.name),
            ("WARC-Record-ID", f"<urn:uuid:{uuid.uuid5(NS, 'warcinfo/' + path.name)}>"),
            ("Content-Type", "application/warc-fields"),
        ], protocol="WARC/1.0")
        w.write_record(w.create_warc_record("", "warcinfo", payload=io.BytesIO(payload),
                                            length=len(payload), warc_headers=headers))
        for d in docs:
            body = d["body"]
            headers = StatusAndHeaders("", [
                ("WARC-Type", "conversion"),
                ("WARC-Target-URI", d["url"]),
                ("WARC-Date", d["date"]),
                ("WARC-Record-ID", f"<urn:uuid:{uuid.uuid5(NS, 'conversion/' + d['url'])}>"),
                ("WARC-Refers-To", f"<urn:uuid:{uuid.uuid5(NS, 'response/' + d['url'])}>"),
                ("WARC-Block-Digest", block_digest(body)),
                ("Content-Type", "text/plain"),
            ], protocol="WARC/1.0")
            rec = w.create_warc_record(d["url"], "conversion", payload=io.BytesIO(body),
                                       length=len(body), warc_headers=headers,
                                       warc_content_type="text/plain")
            w.write_record(rec)
    tmp.replace(path)


def main() -> int:
    args = demo_parser(__doc__, "$CCPIPE_HOME/demo").parse_args()
    out = args.out or demo_dir()
    shard_names = [f"demo-{i:04d}.warc.wet.gz" for i in range(args.shards)]
    stamp = Stamp(out, f"v{FORMAT_VERSION} shards={args.shards} lo_stride={args.lo_stride} limit={args.limit}",
                  [COMBINED, *shard_names, "wet.paths", "labels.tsv"])
    if (done := stamp.settled(args, "demo crawl")) is not None:
        return done

    t0 = time.time()
    stamp.begin()
    docs = collect(args.lo_stride, args.limit)
    if not docs:
        raise SystemExit("no pages found")
    versions = sorted({f"{d['package']}={d['version']}" for d in docs})
    info = {
        "software": "ccpipe scripts/make_demo_wet.py (resiliparse html2text, warcio)",
        "isPartOf": "CCPIPE-DEMO",
        "description": "ccpipe demo crawl: HTML pages of Debian documentation packages converted to text",
        "source-packages": " ".join(versions),
        "license": "debian-handbook: GPL-2.0+ or CC-BY-SA-3.0; libreoffice-help: MPL-2.0",
        "format": "WARC File Format 1.0",
        "conformsTo": "http://bibnum.bnf.fr/WARC/WARC_ISO_28500_version1_latestdraft.pdf",
    }
    write_wet(out / COMBINED, docs, info)
    k = max(1, args.shards)
    bounds = shard_bounds(len(docs), k)
    for i, name in enumerate(shard_names):
        write_wet(out / name, docs[bounds[i]:bounds[i + 1]], info)
    remove_stale_shards(out, "demo-*.warc.wet.gz", shard_names)
    (out / "wet.paths").write_text("".join(n + "\n" for n in shard_names))
    with open(out / "labels.tsv", "w", encoding="utf-8") as f:
        f.write("url\tlang\tlocale\tpackage\ttitle\n")
        for d in docs:
            f.write(f"{d['url']}\t{d['lang']}\t{d['locale']}\t{d['package']}\t{d['title'].replace(chr(9), ' ')}\n")

    langs: dict[str, int] = {}
    for d in docs:
        langs[d["lang"]] = langs.get(d["lang"], 0) + 1
    top = ", ".join(f"{l}={n}" for l, n in sorted(langs.items(), key=lambda x: -x[1]))
    size = (out / COMBINED).stat().st_size
    stamp.finish(f"records={len(docs)} bytes={size} langs: {top}")
    log(f"demo crawl: {len(docs)} records, {len(langs)} languages, {size / 1e6:.1f} MB gz "
        f"-> {out / COMBINED} + {k} shards ({time.time() - t0:.0f}s)")
    log(f"languages: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
