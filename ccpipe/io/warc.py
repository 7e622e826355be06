"""WARC response records -> Documents, by main-text extraction (:mod:`ccpipe.extract`).

The framing of :mod:`ccpipe.io.wet` reads WARC and WET files alike; it hands each
``response`` record here. The record's HTTP header block is parsed with warcio,
a chunked or gzip/deflate/brotli-encoded body is decoded with warcio's readers,
and an HTML payload is extracted. Every response record counts as a document
read (``stats.docs_read``); one that yields no document is a drop of the
``extract`` step, by reason:

``http_status`` (not 2xx), ``bad_http`` (no readable HTTP header block or body
encoding), ``pdf``, ``image``, ``not_html`` (any other media type), ``too_large``
(payload over ``extract.max_bytes``), ``timeout`` (over
``extract.timeout_seconds``), ``extractor_failed`` (the engine raised), ``empty``
(no text after extraction). So ``read == kept + dropped + errored`` holds as for WET.
"""

from __future__ import annotations

import io
import logging
from urllib.parse import urlparse

from warcio.bufferedreaders import BufferedReader, ChunkedDataReader
from warcio.statusandheaders import StatusAndHeadersParser, StatusAndHeadersParserException

from ccpipe.config import ExtractConfig
from ccpipe.document import Document
from ccpipe.extract import Extractor, Timeout, shared_extractor
from ccpipe.stats import Stats

log = logging.getLogger(__name__)

STEP_NAME = "extract"
HTML_TYPES = ("text/html", "application/xhtml+xml")
_http_parser = StatusAndHeadersParser(["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/2.0"], verify=False)
_LOG_FIRST = 5


def media_type(content_type: str | None) -> tuple[str, str | None]:
    """``("text/html", "utf-8")`` from ``text/html; charset=UTF-8``."""
    if not content_type:
        return "", None
    parts = content_type.split(";")
    charset = None
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "charset" and v.strip():
            charset = v.strip().strip("\"'")
    return parts[0].strip().lower(), charset


def _looks_like_html(payload: bytes) -> bool:
    head = payload[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head


def kind_of(media: str, payload: bytes) -> str:
    """``html``, ``pdf``, ``image`` or ``not_html`` from the HTTP Content-Type (else the
    record's WARC-Identified-Payload-Type); an unlabelled or generic type is sniffed."""
    if media in HTML_TYPES:
        return "html"
    if media == "application/pdf" or payload[:5] == b"%PDF-":
        return "pdf"
    if media.startswith("image/"):
        return "image"
    if media in ("", "application/octet-stream", "unknown/unknown") and _looks_like_html(payload):
        return "html"
    return "not_html"


def _decoded_payload(http, raw: bytes) -> bytes:
    enc = (http.get_header("Content-Encoding") or "").strip().lower() or None
    if enc not in (None, "gzip", "x-gzip", "deflate", "br", "identity"):
        raise ValueError(f"unknown content encoding {enc!r}")
    decomp = {"x-gzip": "gzip", "identity": None}.get(enc, enc)
    if "chunked" in (http.get_header("Transfer-Encoding") or "").lower():
        return ChunkedDataReader(io.BytesIO(raw), decomp_type=decomp).read()
    if decomp:
        return BufferedReader(io.BytesIO(raw), decomp_type=decomp).read()
    return raw


class ResponseReader:
    """Turns the response records of one input into Documents, counting every skip."""

    def __init__(self, path: str, segment: str, stats: Stats, cfg: ExtractConfig,
                 extractor: Extractor | None = None):
        self.path = path
        self.segment = segment
        self.stats = stats
        self.cfg = cfg
        self.extractor = extractor or shared_extractor(cfg.engine, cfg.timeout_seconds)
        self.step = stats.step(STEP_NAME)
        self._logged = 0

    def _drop(self, reason: str, rid: str | None, detail: str = "") -> None:
        self.step.dropped[reason] += 1
        if reason in ("timeout", "extractor_failed", "bad_http") and self._logged < _LOG_FIRST:
            self._logged += 1
            log.warning("%s: record %s skipped (%s) %s", self.path, rid or "?", reason, detail)

    def document(self, headers, body: bytes, cut: bool) -> Document | None:
        """The record's document, or None (counted) when it gives none. ``cut``: the
        record was cut off by the end of its file (what is there is used)."""
        self.stats.docs_read += 1
        self.step.docs_in += 1
        rid = (headers.get_header("WARC-Record-ID") or "").strip()
        url = (headers.get_header("WARC-Target-URI") or "").strip()
        end = body.find(b"\r\n\r\n")
        sep = 4
        if end < 0:
            end, sep = body.find(b"\n\n"), 2
        if end < 0:
            self._drop("bad_http", rid, "no HTTP header block")
            return None
        try:
            http = _http_parser.parse(io.BytesIO(body[: end + sep]))
        except (StatusAndHeadersParserException, ValueError, EOFError) as e:
            self._drop("bad_http", rid, str(e))
            return None
        code = http.get_statuscode() or ""
        if not code.startswith("2"):
            self._drop("http_status", rid)
            return None
        try:
            payload = _decoded_payload(http, body[end + sep:])
        except Exception as e:  # noqa: BLE001 - zlib/brotli/chunk errors of one record
            self._drop("bad_http", rid, f"body: {e}")
            return None
        media, charset = media_type(http.get_header("Content-Type"))
        if not media:  # no HTTP Content-Type: what the crawler identified (Common Crawl, 2017+)
            media = media_type(headers.get_header("WARC-Identified-Payload-Type"))[0]
        kind = kind_of(media, payload)
        if kind != "html":
            self._drop(kind, rid)
            return None
        if len(payload) > self.cfg.max_bytes:
            self._drop("too_large", rid)
            return None
        if (headers.get_header("WARC-Truncated") or "").strip():
            self.step.counters["payload_truncated_by_crawler"] += 1
        self.step.counters["html_bytes"] += len(payload)
        try:
            page = self.extractor.extract(payload, charset)
        except Timeout as e:
            self._drop("timeout", rid, str(e))
            return None
        except RuntimeError as e:
            self._drop("extractor_failed", rid, str(e))
            return None
        self.step.chars_in += page.html_chars
        if not page.text:
            self._drop("empty", rid)
            return None
        self.step.docs_out += 1
        self.step.chars_out += len(page.text)
        self.stats.chars_read += len(page.text)
        if cut:
            self.stats.counters["records_truncated_kept"] += 1
        lang = page.lang or (http.get_header("Content-Language") or "").strip() or None
        return Document(
            id=rid,
            url=url,
            date_download=(headers.get_header("WARC-Date") or "").strip(),
            digest=(headers.get_header("WARC-Payload-Digest") or headers.get_header("WARC-Block-Digest") or "").strip(),
            title=page.title,
            raw_content=page.text,
            source_domain=urlparse(url).netloc,
            cc_segment=self.segment,
            content_length=len(payload),
            truncated=cut,
            content_type=media or "text/html",
            charset=page.charset,
            html_lang=lang,
        )


def write_warc(path, pages, *, gzip: bool = True, date: str = "2024-05-18T01:58:10Z") -> int:
    """Write a genuine WARC file of HTTP responses with warcio (one gzip member per
    record when ``gzip``): ``pages`` yields ``(url, content_type, payload)``, optionally
    followed by the HTTP status line (``"404 Not Found"``) and the record's WARC-Date.
    Record ids are derived from the file name, position and URL, so a rebuild is
    byte-identical. Returns the number of records written. For tests, benchmarks and
    the demo crawl."""
    import hashlib
    import uuid
    from pathlib import Path

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    with open(tmp, "wb") as out:
        writer = WARCWriter(out, gzip=gzip)
        info = writer.create_warcinfo_record(path.name, {"software": "ccpipe"})
        info.rec_headers.replace_header("WARC-Date", date)  # not the time of writing: reproducible
        info_id = uuid.UUID(hashlib.md5(path.name.encode()).hexdigest())
        info.rec_headers.replace_header("WARC-Record-ID", f"<urn:uuid:{info_id}>")
        writer.write_record(info)
        for page in pages:
            url, ctype, payload = page[:3]
            status = page[3] if len(page) > 3 else "200 OK"
            when = page[4] if len(page) > 4 else date
            http = StatusAndHeaders(status, [("Content-Type", ctype), ("Content-Length", str(len(payload)))],
                                    protocol="HTTP/1.1")
            rid = f"<urn:uuid:{uuid.UUID(hashlib.md5(f'{path.name}{n}{url}'.encode()).hexdigest())}>"
            # as Common Crawl: the payload's media type as identified by the crawler
            identified = ctype.split(";")[0].strip().lower()
            rec = writer.create_warc_record(url, "response", payload=io.BytesIO(payload), http_headers=http,
                                            warc_headers_dict={"WARC-Date": when, "WARC-Record-ID": rid,
                                                               "WARC-Identified-Payload-Type": identified})
            writer.write_record(rec)
            n += 1
    tmp.replace(path)
    return n
