"""WARC input: HTML responses become documents by main-text extraction (issue 16)."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pytest

from ccpipe.config import ExtractConfig, load_config
from ccpipe.errors import ConfigError
from ccpipe.extract import Extractor, full_text, process_html, resolve
from ccpipe.io import warc as warc_mod
from ccpipe.io.warc import write_warc
from ccpipe.io.wet import read_wet
from ccpipe.stats import Stats
from tests.conftest import ROOT, data_path

EXCERPT = ("warc", "CC-MAIN-2020-34.excerpt.warc.gz")
MARKUP = re.compile(r"<\s*/?\s*[a-zA-Z!][^>]*>|&(lt|gt|amp|nbsp|quot);")


def _read(path: Path, cfg: ExtractConfig | None = None) -> tuple[list, Stats]:
    st = Stats()
    docs = list(read_wet(str(path), st, extract=cfg))
    return docs, st


def _identity(st: Stats) -> None:
    ex = st.steps["extract"]
    assert st.docs_read == ex.docs_in + st.docs_errored  # an unreadable record never reaches extraction
    assert ex.docs_in == ex.docs_out + sum(ex.dropped.values())


def test_real_warc_excerpt_every_record_counted_and_text_without_markup():
    docs, st = _read(data_path(*EXCERPT))
    # every record of the file, by type: 16 responses read as documents, the rest counted
    assert {k: v for k, v in st.counters.items() if k.startswith("records_")} == {
        "records_response": 16, "records_request": 17, "records_metadata": 16, "records_warcinfo": 1}
    assert st.docs_read == 16 and st.docs_errored == 0
    assert dict(st.steps["extract"].dropped) == {}
    assert len(docs) == 16 and all(d.raw_content.strip() for d in docs)
    _identity(st)
    for d in docs:
        assert not MARKUP.search(d.raw_content), (d.url, MARKUP.search(d.raw_content))
        assert d.content_type == "text/html" and d.id.startswith("<urn:uuid:") and d.date_download.startswith("2020-")
    by_url = {d.url: d for d in docs}
    ru = by_url["http://01spb.ru/company/"]  # HTTP header: charset=windows-1251
    assert ru.charset == "cp1251" and ru.title.startswith("О компании") and "пожарной безопасности" in ru.raw_content
    zh = by_url["http://037426.cn/"]  # HTTP header: charset=gb2312, decoded as its superset GBK
    assert zh.charset == "gbk" and "亚洲" in zh.title
    nl = by_url["http://0900-hovenier.nl/gelderland/oosterbeek/"]
    assert nl.html_lang == "nl" and nl.raw_content.startswith("Hovenier in Oosterbeek")
    assert by_url["http://044545.com/topic/20200207/015849.html"].html_lang == "zh-CN"
    assert Counter(d.charset for d in docs) == {"utf-8": 7, "gbk": 6, "cp1252": 2, "cp1251": 1}
    # main text is a small part of the HTML (markup, scripts, menus gone)
    ex = st.steps["extract"]
    assert ex.chars_out < 0.1 * ex.chars_in


def test_in_process_and_helper_process_extract_the_same():
    no_limit, _ = _read(data_path(*EXCERPT), ExtractConfig(timeout_seconds=None))
    limited, _ = _read(data_path(*EXCERPT), ExtractConfig(timeout_seconds=30))
    assert [(d.id, d.raw_content, d.title, d.charset, d.html_lang) for d in no_limit] == \
        [(d.id, d.raw_content, d.title, d.charset, d.html_lang) for d in limited]


PARAGRAPH = ("Das Wetter in Oosterbeek war gestern sonnig, und viele Leute gingen im Park spazieren. "
             "Am Abend zogen Wolken auf, aber es blieb trocken bis nach Mitternacht.")


def _page(body: str, title: str = "Seite") -> bytes:
    return f"<!DOCTYPE html><html lang='de'><head><title>{title}</title></head><body>{body}</body></html>".encode()


def test_every_skip_reason_is_counted(tmp_path):
    good = _page(f"<p>{PARAGRAPH}</p>")
    pages = [
        ("https://a.example/ok", "text/html; charset=utf-8", good),
        ("https://a.example/ok-unlabelled", "application/octet-stream", good),  # sniffed as HTML
        ("https://a.example/ok-xhtml", "application/xhtml+xml", good),
        ("https://a.example/doc.pdf", "application/pdf", b"%PDF-1.4\n" + b"0" * 100),
        ("https://a.example/doc-mislabelled", "text/plain", b"%PDF-1.7\n" + b"0" * 100),
        ("https://a.example/logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100),
        ("https://a.example/data.json", "application/json", b'{"a": 1}'),
        ("https://a.example/gone", "text/html", _page("<p>Not found</p>"), "404 Not Found"),
        ("https://a.example/moved", "text/html", b"", "301 Moved Permanently"),
        ("https://a.example/huge", "text/html", _page("<p>" + "x " * 40_000 + "</p>")),
        ("https://a.example/blank", "text/html", _page("<script>var a = 1;</script><div>  </div>")),
    ]
    path = tmp_path / "mixed.warc.gz"
    write_warc(path, pages)
    docs, st = _read(path, ExtractConfig(max_bytes=50_000))
    assert [d.url for d in docs] == ["https://a.example/ok", "https://a.example/ok-unlabelled",
                                     "https://a.example/ok-xhtml"]
    assert all(d.raw_content == PARAGRAPH and d.title == "Seite" and d.html_lang == "de" for d in docs)
    assert [d.content_type for d in docs] == ["text/html", "application/octet-stream", "application/xhtml+xml"]
    assert dict(st.steps["extract"].dropped) == {
        "pdf": 2, "image": 1, "not_html": 1, "http_status": 2, "too_large": 1, "empty": 1}
    assert st.docs_read == len(pages)
    _identity(st)


def _raw_response(url: str, http_head: bytes, body: bytes, identified: str | None = None) -> bytes:
    block = http_head + b"\r\n" + body
    extra = f"WARC-Identified-Payload-Type: {identified}\r\n" if identified else ""
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\n{extra}"
            f"WARC-Date: 2024-05-18T01:58:10Z\r\nWARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(block)}\r\n\r\n").encode()
    return head + block + b"\r\n\r\n"


def test_chunked_and_compressed_bodies_are_decoded(tmp_path):
    html = _page(f"<p>{PARAGRAPH}</p>")
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (html[:50], html[50:])) + b"0\r\n\r\n"
    deflated = zlib.compress(html)
    records = [
        _raw_response("https://b.example/gzip", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                      b"Content-Encoding: gzip\r\n", gzip.compress(html)),
        _raw_response("https://b.example/chunked", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                      b"Transfer-Encoding: chunked\r\n", chunked),
        _raw_response("https://b.example/deflate", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                      b"Content-Encoding: deflate\r\n", deflated),
        # a server that says gzip and sends plain HTML: warcio's reader falls back to the raw bytes
        _raw_response("https://b.example/says-gzip", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                      b"Content-Encoding: gzip\r\n", html),
        _raw_response("https://b.example/unknown-encoding", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                      b"Content-Encoding: zstd\r\n", html),
        _raw_response("https://b.example/no-http", b"", b"just bytes, no header block"),
        # no HTTP Content-Type: the crawler's identified payload type decides
        _raw_response("https://b.example/identified-html", b"HTTP/1.1 200 OK\r\n", f"<p>{PARAGRAPH}</p>".encode(),
                      identified="text/html"),
        _raw_response("https://b.example/identified-zip", b"HTTP/1.1 200 OK\r\n", b"PK\x03\x04 zip bytes",
                      identified="application/zip"),
    ]
    path = tmp_path / "encoded.warc"
    path.write_bytes(b"".join(records))
    docs, st = _read(path)
    assert [(d.url, d.raw_content) for d in docs] == [
        ("https://b.example/gzip", PARAGRAPH), ("https://b.example/chunked", PARAGRAPH),
        ("https://b.example/deflate", PARAGRAPH), ("https://b.example/says-gzip", PARAGRAPH),
        ("https://b.example/identified-html", PARAGRAPH)]
    assert dict(st.steps["extract"].dropped) == {"bad_http": 2, "not_html": 1}
    _identity(st)


RUSSIAN = ("Стратегия пожарной безопасности: компания проектирует и монтирует системы "
           "пожарной сигнализации, оповещения и автоматического пожаротушения в Петербурге.")
CHINESE = "我国卫生与健康领域有了基本法，镕基同志讲话，喆人访问了广东省人民政府。"  # 镕, 喆: GBK, not GB2312
JAPANESE = "日本語のテキストです。東京の天気は晴れ、気温は二十度まで上がりました。"


@pytest.mark.parametrize("name, payload, header_charset, want_charset, text", [
    ("header-1251", _page(f"<p>{RUSSIAN}</p>").decode().encode("cp1251"), "windows-1251", "cp1251", RUSSIAN),
    ("header-gb2312-gbk-chars", _page(f"<p>{CHINESE}</p>").decode().encode("gbk"), "gb2312", "gbk", CHINESE),
    ("header-shift-jis", _page(f"<p>{JAPANESE}</p>").decode().encode("shift_jis"), "Shift_JIS", "shift_jis",
     JAPANESE),
    ("meta-only-1251", (f"<html><head><meta charset='windows-1251'></head><body><p>{RUSSIAN}</p>"
                        "</body></html>").encode("cp1251"), None, "cp1251", RUSSIAN),
    ("meta-http-equiv-sjis", (f"<html><head><meta http-equiv='Content-Type' content='text/html; charset=shift_jis'>"
                              f"</head><body><p>{JAPANESE}</p></body></html>").encode("shift_jis"), None,
     "shift_jis", JAPANESE),
    ("wrong-header-utf8-is-1251", _page(f"<p>{RUSSIAN * 3}</p>").decode().encode("cp1251"), "utf-8", "cp1251",
     RUSSIAN * 3),
    ("bom-utf8", b"\xef\xbb\xbf" + _page(f"<p>{RUSSIAN}</p>"), "iso-8859-1", "utf-8", RUSSIAN),
])
def test_charsets(name, payload, header_charset, want_charset, text):
    page = process_html(payload, header_charset, resolve("resiliparse"))
    assert page.charset == want_charset, name
    assert page.text == text, name


def test_detection_without_any_declaration():
    payload = f"<html><body><p>{RUSSIAN}</p><p>{RUSSIAN}</p></body></html>".encode("cp1251")
    page = process_html(payload, None, resolve("resiliparse"))
    assert page.charset == "cp1251" and page.text == RUSSIAN + "\n" + RUSSIAN


def test_main_text_drops_navigation_and_footer():
    nav = "".join(f"<li><a href='/{i}'>Menu item {i}</a></li>" for i in range(12))
    html = (f"<html><head><title>T</title></head><body><header><nav><ul>{nav}</ul></nav></header>"
            f"<main><article><h1>Wetter</h1><p>{PARAGRAPH}</p><p>{PARAGRAPH[::-1]}</p></article></main>"
            "<footer><p>Impressum | Datenschutz | Kontakt | Copyright 2024 Example GmbH</p></footer>"
            "</body></html>").encode()
    main = process_html(html, "utf-8", resolve("resiliparse")).text
    every = process_html(html, "utf-8", full_text).text
    assert PARAGRAPH in main and PARAGRAPH[::-1] in main
    assert "Menu item" not in main and "Impressum" not in main
    assert "Menu item 11" in every and "Impressum" in every  # the WET-style baseline keeps them


SLOW_ENGINE = '''
import os, threading
from ccpipe.extract import resiliparse_text

def extract(html, tree):
    if "HANG" in html:
        threading.Event().wait()  # never returns: only killing the helper ends it
    if "BOOM" in html:
        raise ValueError("engine failure")
    return resiliparse_text(html, tree) + " pid=%d" % os.getpid()
'''


@pytest.mark.timeout(120)
def test_a_page_over_the_time_limit_is_dropped_and_the_next_one_is_extracted(tmp_path, monkeypatch):
    (tmp_path / "slow_engine.py").write_text(SLOW_ENGINE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    ex = Extractor("slow_engine:extract", timeout=2.0)
    monkeypatch.setattr(warc_mod, "shared_extractor", lambda engine, timeout: ex)
    pages = [("https://c.example/1", "text/html", _page("<p>first page</p>")),
             ("https://c.example/2", "text/html", _page("<p>HANG here</p>")),
             ("https://c.example/3", "text/html", _page("<p>third page</p>")),
             ("https://c.example/4", "text/html", _page("<p>BOOM</p>")),
             ("https://c.example/5", "text/html", _page("<p>fifth page</p>"))]
    path = tmp_path / "slow.warc.gz"
    write_warc(path, pages)
    try:
        docs, st = _read(path)
    finally:
        ex.close()
    assert [d.url for d in docs] == ["https://c.example/1", "https://c.example/3", "https://c.example/5"]
    assert dict(st.steps["extract"].dropped) == {"timeout": 1, "extractor_failed": 1}
    _identity(st)
    pids = [int(d.raw_content.rsplit("pid=", 1)[1]) for d in docs]
    assert pids[0] != pids[1] == pids[2]  # the hung helper was replaced; a raising engine is not


def test_extract_config_is_validated(monkeypatch):
    import importlib.util

    if importlib.util.find_spec("trafilatura") is not None:
        assert load_config(overrides={"extract.engine": "trafilatura"}).extract.engine == "trafilatura"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trafilatura" else real(name, *a))
    with pytest.raises(ConfigError, match=r"trafilatura is not installed: pip install 'ccpipe\[trafilatura\]'"):
        load_config(overrides={"extract.engine": "trafilatura"})
    monkeypatch.undo()
    assert load_config(overrides={"extract.timeout_seconds": None}).extract.timeout_seconds is None
    with pytest.raises(ConfigError, match="extract.engine must be one of"):
        load_config(overrides={"extract.engine": "lynx"})
    with pytest.raises(ConfigError, match="extract.timeout_seconds must be > 0"):
        load_config(overrides={"extract.timeout_seconds": 0})
    with pytest.raises(ConfigError, match="extract.max_bytes"):
        load_config(overrides={"extract.max_bytes": 0})
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(overrides={"extract.engin": "resiliparse"})


def test_trafilatura_engine_on_the_real_excerpt():
    try:
        import trafilatura  # noqa: F401
    except ImportError as e:
        pytest.skip(f"trafilatura is not installed ({e}); pip install 'ccpipe[trafilatura]'")
    docs, st = _read(data_path(*EXCERPT), ExtractConfig(engine="trafilatura"))
    _identity(st)
    assert len(docs) >= 12 and sum(st.steps["extract"].dropped.values()) == 16 - len(docs)
    assert set(st.steps["extract"].dropped) <= {"empty"}
    for d in docs:
        assert d.raw_content.strip() and not MARKUP.search(d.raw_content), d.url
    ru = next(d for d in docs if d.url == "http://01spb.ru/company/")
    assert ru.charset == "cp1251" and "пожарной безопасности" in ru.raw_content


@pytest.mark.timeout(300)
def test_ccpipe_run_on_the_warc_excerpt(tmp_path):
    from ccpipe.io.dataset import read_rows

    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "ccpipe.cli", "run", str(data_path(*EXCERPT)), "-o", str(out), "--no-progress",
         "-w", "1", "--set", "perplexity.enabled=false", "--set", "ref.enabled=false"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    run = json.loads((out / "stats" / "run.json").read_text())
    assert run["identity_holds"] and run["documents"]["read"] == 16 and run["documents"]["errored"] == 0
    assert run["steps"]["extract"]["docs_out"] == 16 and run["file_problems"] == {}
    rows = read_rows(out, ["url", "raw_content", "content_type", "charset", "html_lang", "language"]).to_pylist()
    assert len(rows) == run["documents"]["kept"] >= 12
    assert all(row["raw_content"] and not MARKUP.search(row["raw_content"]) for row in rows)
    by_url = {row["url"]: row for row in rows}
    assert by_url["http://01spb.ru/company/"]["charset"] == "cp1251"
    assert by_url["http://01spb.ru/company/"]["language"] == "ru"
    assert by_url["http://0900-hovenier.nl/gelderland/oosterbeek/"]["html_lang"] == "nl"
    assert {row["content_type"] for row in rows} == {"text/html"}


def _excerpt_ids() -> list[str]:
    docs, _ = _read(data_path(*EXCERPT))
    return [d.id for d in docs]


def test_byte_range_shards_single_stream_gzip_and_plain_read_the_same_documents(tmp_path):
    from ccpipe.config import InputConfig
    from ccpipe.io.inputs import plan_shards

    src = data_path(*EXCERPT)
    want = _excerpt_ids()
    # per-record gzip split into byte ranges: every document exactly once
    shards = plan_shards(InputConfig(paths=[str(src)], split_mb=0.02), group_size=50)
    assert len(shards) >= 4
    got = []
    for s in shards:
        got += [d.id for d in read_wet(s.path, Stats(), s.range)]
    assert got == want
    raw = gzip.decompress(src.read_bytes())
    single = tmp_path / "single-stream.warc.gz"
    single.write_bytes(gzip.compress(raw))  # one gzip stream for the whole file
    plain = tmp_path / "plain.warc"
    plain.write_bytes(raw)
    assert [d.id for d in _read(single)[0]] == want
    assert [d.id for d in _read(plain)[0]] == want


def test_warc_over_http_and_a_crawls_warc_paths(tmp_path):
    import functools
    import http.server
    import shutil
    import threading

    from ccpipe.config import InputConfig
    from ccpipe.io.inputs import crawl_paths

    root = tmp_path / "mirror"
    seg = root / "crawl-data" / "CC-MAIN-TEST" / "segments" / "1" / "warc"
    seg.mkdir(parents=True)
    shutil.copy(data_path(*EXCERPT), seg / "x.warc.gz")
    (root / "crawl-data" / "CC-MAIN-TEST" / "warc.paths.gz").write_bytes(
        gzip.compress(b"crawl-data/CC-MAIN-TEST/segments/1/warc/x.warc.gz\n"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        urls = crawl_paths(InputConfig(crawl="CC-MAIN-TEST", crawl_files="warc", segments="0", base_url=base),
                           cache_dir=tmp_path / "cache")
        assert urls == [base + "crawl-data/CC-MAIN-TEST/segments/1/warc/x.warc.gz"]
        assert [d.id for d in _read(urls[0])[0]] == _excerpt_ids()
    finally:
        server.shutdown()
    with pytest.raises(ConfigError, match="crawl_files"):
        InputConfig(crawl="CC-MAIN-TEST", crawl_files="wat")


@pytest.mark.parametrize("truncated", ["keep", "drop"])
def test_a_response_cut_off_by_the_end_of_the_file(tmp_path, truncated):
    raw = gzip.decompress(data_path(*EXCERPT).read_bytes())
    last = raw.rfind(b"WARC-Type: response")
    cut = tmp_path / "cut.warc"
    cut.write_bytes(raw[: raw.index(b"</head>", last) + 6000])  # inside the last response's HTML body
    st = Stats()
    docs = list(read_wet(str(cut), st, truncated=truncated))
    want = _excerpt_ids()
    _identity(st)
    if truncated == "keep":  # what is there is extracted, flagged, as for WET
        assert [d.id for d in docs] == want and docs[-1].truncated and not any(d.truncated for d in docs[:-1])
        assert st.counters["records_truncated_kept"] == 1 and st.docs_errored == 0
        assert docs[-1].title and docs[-1].raw_content
    else:
        assert [d.id for d in docs] == want[:-1] and dict(st.errors) == {"truncated_record": 1}


def test_a_warc_without_response_records_is_named(tmp_path):
    from warcio.archiveiterator import ArchiveIterator
    from warcio.warcwriter import WARCWriter

    from ccpipe.io.input_check import InputTally

    path = tmp_path / "requests-only.warc.gz"
    with open(data_path(*EXCERPT), "rb") as src, open(path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        for rec in ArchiveIterator(src):
            if rec.rec_type != "response":
                writer.write_record(rec)
    docs, st = _read(path)
    tally = InputTally()
    tally.add(str(path), st)
    assert docs == [] and st.docs_read == 0
    assert tally.problems() == {str(path): (
        "input_no_records", "a WARC file with no response record: 17 request, 16 metadata, 1 warcinfo record(s) "
        "(ccpipe reads WET conversion records and WARC response records)")}
