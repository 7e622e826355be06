"""Crawl ids, segment ranges and downloads with retries (loopback only)."""

from __future__ import annotations

import gzip
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from ccpipe.config import InputConfig
from ccpipe.errors import ConfigError, InputError
from ccpipe.io.inputs import crawl_paths, http_get, parse_segments
from ccpipe.io.wet import read_wet
from ccpipe.stats import Stats


def test_segment_ranges():
    assert list(parse_segments("2-4", 10)) == [2, 3, 4]
    assert list(parse_segments("7", 10)) == [7]
    assert list(parse_segments(None, 3)) == [0, 1, 2]
    with pytest.raises(ConfigError, match="outside"):
        parse_segments("5-12", 10)
    with pytest.raises(ConfigError, match="must be N or A-B"):
        parse_segments("a-b", 10)
    with pytest.raises(ConfigError, match="needs input.crawl"):
        InputConfig(segments="0-1")


class _Flaky(http.server.SimpleHTTPRequestHandler):
    """Serves a directory but answers 503 to the first ``fail`` requests."""

    fail = 0
    seen = 0

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).seen += 1
        if type(self).seen <= type(self).fail:
            self.send_error(503, "try later")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, wet_dir):
    """A local Common Crawl mirror with a two-file crawl, served on 127.0.0.1."""
    root = tmp_path / "mirror"
    seg = root / "crawl-data" / "CC-MAIN-TEST" / "segments" / "1" / "wet"
    seg.mkdir(parents=True)
    names = ["CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz", "CC-MAIN-2024-22-00000.one-page.warc.wet.gz"]
    for n in names:
        shutil.copy(wet_dir / n, seg / n)
    listing = "\n".join(f"crawl-data/CC-MAIN-TEST/segments/1/wet/{n}" for n in names) + "\n"
    (root / "crawl-data" / "CC-MAIN-TEST" / "wet.paths.gz").write_bytes(gzip.compress(listing.encode()))

    handler = type("H", (_Flaky,), {"fail": 0, "seen": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", handler, root
    server.shutdown()


def test_crawl_segment_range_over_http_with_retries(mirror, tmp_path):
    base, handler, _ = mirror
    handler.fail = 2  # two 503s, then the file: retried with backoff
    cfg = InputConfig(crawl="CC-MAIN-TEST", segments="1", base_url=base, retry_base_seconds=0.05, retry_max_seconds=0.1)
    urls = crawl_paths(cfg, cache_dir=tmp_path / "cache")
    assert urls == [base + "crawl-data/CC-MAIN-TEST/segments/1/wet/CC-MAIN-2024-22-00000.one-page.warc.wet.gz"]
    assert handler.seen == 3
    # the paths file is cached: no further request
    assert crawl_paths(cfg, cache_dir=tmp_path / "cache") == urls and handler.seen == 3
    # and the WET file itself streams over HTTP through fsspec
    st = Stats()
    (doc,) = list(read_wet(urls[0], st))
    assert doc.url == "https://an.wikipedia.org/wiki/Escopete"


def test_download_gives_up_with_a_clear_error(mirror):
    base, handler, _ = mirror
    handler.fail = 100
    with pytest.raises(InputError, match="after 2 attempts"):
        http_get(base + "crawl-data/CC-MAIN-TEST/wet.paths.gz", attempts=2, backoff=0.01)


def test_crawl_from_a_local_mirror(mirror, tmp_path):
    _, _, root = mirror
    cfg = InputConfig(crawl="CC-MAIN-TEST", segments="0-1", base_url=str(root))
    urls = crawl_paths(cfg, cache_dir=tmp_path / "c2")
    assert len(urls) == 2 and all(Path(u).is_file() for u in urls)
