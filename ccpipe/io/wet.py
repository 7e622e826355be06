"""Streaming, damage-tolerant reader of Common Crawl WET (and WARC) files.

Layers, each doing one thing:

1. ``_decompressed_chunks``: bytes of a file (or of a byte range of it) after
   gzip. Common Crawl writes one gzip member per record, so a file can be split
   into byte ranges: a range starts at the first member header at or after its
   first byte and ends with the last member that *starts* before its end.
   Single-stream gzip (one member for the whole file) and plain files are read
   whole by the range that contains byte 0.
2. ``_frame_records``: cuts the decompressed stream into WARC records. The
   record length comes from Content-Length, but is checked against the record
   separator; when a record is damaged the framer counts it and resynchronises on
   the next ``WARC/1.x`` header line instead of giving up on the file.
3. ``read_wet``: turns conversion records into :class:`Document`, headers read
   by name with warcio's parser (2018+ files carry more headers than 2013 ones);
   the ``response`` records of a WARC file go to :mod:`ccpipe.io.warc` (HTML ->
   main text), so WET and WARC inputs are told apart by content, not by name.

Every problem lands in a :class:`Stats` under a named reason; nothing raises
for bad data except a path that cannot be opened at all.
"""

from __future__ import annotations

import io
import logging
import re
import zlib
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlparse

from warcio.statusandheaders import StatusAndHeadersParser, StatusAndHeadersParserException

from ccpipe.config import ExtractConfig, InputConfig
from ccpipe.document import Document
from ccpipe.errors import InputError
from ccpipe.io.http import Backoff, HttpFile
from ccpipe.stats import Stats

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b\x08"
_CHUNK = 1 << 20
_MAX_HEADER_BYTES = 64 * 1024
_LOG_FIRST = 5
_header_parser = StatusAndHeadersParser(["WARC/1.0", "WARC/1.1"], verify=False)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A slice of an input file; ``end=None`` means to the end of the file."""

    start: int = 0
    end: int | None = None


def open_binary(path: str, backoff: Backoff | None = None):
    """Open a local path, an http(s) URL (retried with ``backoff``: ccpipe.io.http) or
    any other fsspec URL (s3://, ...) for reading bytes."""
    if "://" not in path or path.startswith("file://"):
        local = path[7:] if path.startswith("file://") else path
        try:
            return open(local, "rb")
        except OSError as e:
            raise InputError(f"cannot open input {path!r}: {e.strerror}. Check the path.") from e
    if path.startswith(("http://", "https://")):
        return HttpFile(path, backoff)
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover - fsspec is a core dependency
        raise InputError("reading URLs needs fsspec: pip install fsspec") from e
    try:
        return fsspec.open(path, "rb").open()
    except ImportError as e:
        raise InputError(f"cannot open {path!r}: {e}. For s3:// install the s3 extra: pip install s3fs") from e
    except (OSError, ValueError) as e:
        raise InputError(f"cannot open input {path!r}: {e}") from e


def _is_gzip(f) -> bool:
    head = f.read(2)
    f.seek(0)
    return head == GZIP_MAGIC[:2]


def _find_member_start(f, start: int, end: int | None, stats: Stats) -> int | None:
    """First offset >= start where a gzip member holding a WARC record begins."""
    f.seek(start)
    pos = start
    carry = b""
    while end is None or pos < end:
        block = f.read(_CHUNK)
        if not block:
            return None
        data = carry + block
        base = pos - len(carry)
        i = data.find(GZIP_MAGIC)
        while i >= 0:
            cand = base + i
            if end is not None and cand >= end:
                return None
            if _looks_like_record_member(f, cand):
                return cand
            i = data.find(GZIP_MAGIC, i + 1)
        pos += len(block)
        carry = data[-2:]
        f.seek(pos)
    return None


def _looks_like_record_member(f, offset: int) -> bool:
    here = f.tell()
    try:
        f.seek(offset)
        sample = f.read(64 * 1024)
        d = zlib.decompressobj(31)
        out = d.decompress(sample, 16)
        return out.startswith(b"WARC/")
    except zlib.error:
        return False
    finally:
        f.seek(here)


def _decompressed_chunks(f, rng: ByteRange, stats: Stats) -> Iterator[bytes]:
    """Yield decompressed bytes of the members that start inside ``rng``."""
    if not _is_gzip(f):
        if rng.start > 0:
            return  # plain files are not split; the range at 0 reads them whole
        while block := f.read(_CHUNK):
            yield block
        return
    if rng.start == 0:
        pos = 0
    else:
        found = _find_member_start(f, rng.start, rng.end, stats)
        if found is None:
            return
        pos = found
    f.seek(pos)
    member_start = pos
    d = zlib.decompressobj(31)
    pending = b""
    while True:
        if not pending:
            pending = f.read(_CHUNK)
            if not pending:
                if not d.eof and member_start != pos:
                    stats.file_errors["gzip_truncated"] += 1
                return
        consumed_from = pos
        try:
            out = d.decompress(pending)
        except zlib.error as e:
            stats.file_errors["gzip_corrupt"] += 1
            log.warning("corrupt gzip data at byte %d: %s; skipping to next member", pos, e)
            nxt = _find_member_start(f, pos + 1, None, stats)
            if nxt is None or (rng.end is not None and nxt >= rng.end):
                return
            f.seek(nxt)
            pos = member_start = nxt
            d = zlib.decompressobj(31)
            pending = b""
            continue
        if out:
            yield out
        if d.eof:
            rest = d.unused_data
            pos = consumed_from + len(pending) - len(rest)
            member_start = pos
            if rng.end is not None and member_start >= rng.end:
                return
            d = zlib.decompressobj(31)
            # a few trailing zero bytes after the last member are not a member
            pending = rest if rest.strip(b"\x00") else b""
        else:
            pos = consumed_from + len(pending)
            pending = b""


@dataclass(slots=True)
class RawRecord:
    headers: object | None  # warcio StatusAndHeaders; None when unparseable
    body: bytes
    status: str = "ok"
    """``ok``; ``repaired`` (Content-Length disagreed with where the next record
    starts, so the body was cut there); ``truncated_record`` (the input ends inside
    the body); ``truncated_header``/``bad_header`` (no usable header block)."""


# A record starts with a version line at the start of a line; CRLF per the
# standard, bare LF in some hand-edited or re-encoded files.
_START_RE = re.compile(rb"(?m)^WARC/1\.[01]\r?\n")
_HEADER_END_RE = re.compile(rb"\r?\n\r?\n")
_SEPARATORS = (b"\r\n\r\n", b"\n\n")


def _next_record_start(buf: bytes | bytearray, frm: int) -> int:
    m = _START_RE.search(buf, frm)
    return m.start() if m else -1


def _frame_records(chunks: Iterator[bytes], stats: Stats) -> Iterator[RawRecord]:
    buf = bytearray()
    eof = False
    it = iter(chunks)

    def fill() -> bool:
        nonlocal eof
        if eof:
            return False
        try:
            block = next(it)
        except StopIteration:
            eof = True
            return False
        buf.extend(block)
        stats.counters["bytes_uncompressed"] += len(block)
        return True

    skipped = 0
    while True:
        # 1. the start of a record
        searched = 0
        start = _next_record_start(buf, 0)
        while start < 0:
            searched = max(0, len(buf) - 16)
            if not fill():
                break
            start = _next_record_start(buf, searched)
        if start < 0:
            skipped += len(bytes(buf).strip())
            break
        if start > 0:
            skipped += len(bytes(buf[:start]).strip())
            del buf[:start]
        # 2. its header block
        m = _HEADER_END_RE.search(buf)
        while m is None and len(buf) < _MAX_HEADER_BYTES and fill():
            m = _HEADER_END_RE.search(buf)
        if m is None:
            yield RawRecord(None, b"", "truncated_header")
            del buf[:8]
            continue
        hdr_end, body_start = m.start(), m.end()
        try:
            headers = _header_parser.parse(io.BytesIO(bytes(buf[:hdr_end]) + b"\r\n\r\n"))
        except (StatusAndHeadersParserException, ValueError, EOFError) as e:
            log.debug("bad WARC header: %s", e)
            yield RawRecord(None, b"", "bad_header")
            del buf[:8]
            continue
        try:
            length = int(headers.get_header("Content-Length", "-1"))
        except ValueError:
            length = -1
        # 3. the body: Content-Length bytes, then a blank-line separator
        if length >= 0:
            end = body_start + length
            while len(buf) < end + 4 and fill():
                pass
            tail = bytes(buf[end : end + 4])
            at_eof = eof and len(buf) <= end + 4 and not tail.strip()
            if len(buf) >= end and (at_eof or tail.startswith(_SEPARATORS)):
                yield RawRecord(headers, bytes(buf[body_start:end]))
                sep = 4 if tail.startswith(b"\r\n\r\n") else min(2, len(tail))
                del buf[: end + sep]
                continue
        # 4. Content-Length missing or wrong: the record ends where the next one starts
        nxt = _next_record_start(buf, body_start)
        while nxt < 0:
            searched = max(body_start, len(buf) - 16)
            if not fill():
                break
            nxt = _next_record_start(buf, searched)
        stop = nxt if nxt >= 0 else len(buf)
        body = bytes(buf[body_start:stop]).rstrip(b"\r\n")
        # ending at the input's end short of Content-Length: cut off; otherwise the
        # text up to the next record is whole and only its length header is wrong
        truncated = nxt < 0 and length >= 0 and len(body) < length
        yield RawRecord(headers, body, "truncated_record" if truncated else "repaired")
        del buf[:stop]
    if skipped:
        stats.counters["bytes_skipped_outside_records"] += skipped


def _segment_name(path: str, warcinfo_filename: str | None) -> str:
    return path


def _decode_cut(body: bytes) -> str:
    """UTF-8 text of a body cut off at the end of its file: a character split by the
    cut (its first 1-3 bytes at the very end) is dropped; damage elsewhere raises."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.reason == "unexpected end of data" and e.start >= len(body) - 3:
            return body[: e.start].decode("utf-8")
        raise


def read_input(path: str, stats: Stats, rng: ByteRange, cfg: InputConfig,
               extract: ExtractConfig | None = None) -> Iterator[Document]:
    """:func:`read_wet` under the input section of the config: its treatment of
    truncated records, its retry settings and its error policy; ``extract`` is how
    the HTML of WARC response records becomes text (default: ``ExtractConfig()``).

    With ``input.on_error: skip``, an input that cannot be read (it cannot be
    opened, a download keeps failing, a read error) is named in
    ``stats.file_problems`` and skipped; documents it yielded before the failure
    are kept. With ``fail`` (the default) the error stops the run.
    """
    backoff = Backoff(attempts=cfg.retry_attempts, base_seconds=cfg.retry_base_seconds,
                      max_seconds=cfg.retry_max_seconds)
    try:
        yield from read_wet(path, stats, rng, truncated=cfg.truncated, backoff=backoff, extract=extract)
    except InputError as e:
        if cfg.on_error != "skip":
            raise
        stats.file_problems[path] = f"unreadable, skipped (input.on_error=skip): {e}"
        log.warning("%s: skipped (input.on_error=skip): %s", path, e)


def read_wet(path: str, stats: Stats, rng: ByteRange = ByteRange(), segment: str | None = None,
             truncated: str = "keep", *, backoff: Backoff | None = None,
             extract: ExtractConfig | None = None) -> Iterator[Document]:
    """Yield the conversion records of one WET file (or a byte range of it) as Documents;
    the HTML response records of a WARC file become Documents by main-text extraction
    under ``extract`` (:mod:`ccpipe.io.warc`). A file is WET or WARC by what it holds.

    ``stats`` receives ``docs_read``/``chars_read`` and every problem by reason.
    ``truncated``: a record cut off by the end of the file is kept with its readable
    text and ``Document.truncated`` set (``keep``, counted as
    ``records_truncated_kept``), or counted as the error ``truncated_record`` (``drop``).
    A file that cannot be opened or read raises :class:`InputError`; http(s)
    requests are retried with ``backoff`` (``ccpipe.io.http``).
    """
    try:
        yield from _read_wet(path, stats, rng, segment, truncated, backoff, extract)
    except InputError:
        raise
    except OSError as e:  # a read error after a successful open (EIO, a vanished mount, ...)
        raise InputError(f"reading input {path!r} failed: {e}") from e


def _read_wet(path: str, stats: Stats, rng: ByteRange, segment: str | None, truncated: str,
              backoff: Backoff | None, extract: ExtractConfig | None = None) -> Iterator[Document]:
    segment = segment or path
    logged = 0
    responses = None  # made at the first response record
    with open_binary(path, backoff) as f:
        for rec in _frame_records(_decompressed_chunks(f, rng, stats), stats):
            h = rec.headers
            rtype = (h.get_header("WARC-Type") or "").strip() if h is not None else None
            if rtype == "response":  # a WARC file: HTML responses -> main text
                stats.counters["records_response"] += 1
                if responses is None:
                    from ccpipe.io.warc import ResponseReader

                    responses = ResponseReader(path, segment, stats, extract or ExtractConfig())
                cut = rec.status == "truncated_record" and truncated == "keep"
                if rec.status in ("ok", "repaired") or cut:
                    if rec.status == "repaired":
                        stats.counters["records_length_repaired"] += 1
                    doc = responses.document(h, rec.body, cut)
                    if doc is not None:
                        yield doc
                else:
                    stats.docs_read += 1
                    stats.error(rec.status)
                continue
            if rtype is not None and rtype != "conversion":
                stats.counters[f"records_{rtype or 'untyped'}"] += 1
                if rec.status != "ok":
                    stats.file_errors[f"{rtype or 'untyped'}_{rec.status}"] += 1
                continue
            # a conversion record, or a record too damaged to tell: a document
            stats.docs_read += 1
            cut = rec.status == "truncated_record" and truncated == "keep"
            reason = None if rec.status in ("ok", "repaired") or cut else rec.status
            url = h.get_header("WARC-Target-URI") if h is not None else None
            rid = h.get_header("WARC-Record-ID") if h is not None else None
            if reason is None and (not url or not rid):
                reason = "missing_header"
            if reason is None:
                try:
                    text = _decode_cut(rec.body) if cut else rec.body.decode("utf-8")
                except UnicodeDecodeError:
                    reason = "not_utf8"
            if reason is not None:
                stats.error(reason)
                if logged < _LOG_FIRST:
                    logged += 1
                    log.warning("%s: skipped record %s (%s)", path, rid or "?", reason)
                continue
            if rec.status == "repaired":
                stats.counters["records_length_repaired"] += 1
            if cut:
                stats.counters["records_truncated_kept"] += 1
            stats.chars_read += len(text)
            lines = text.split("\n")
            # WET bodies end with blank lines; CCNet drops them, as do we
            while lines and not lines[-1].strip():
                lines.pop()
            title = lines[0] if lines else ""
            content = "\n".join(lines[1:])
            yield Document(
                id=rid.strip(),
                url=url.strip(),
                date_download=(h.get_header("WARC-Date") or "").strip(),
                digest=(h.get_header("WARC-Block-Digest") or "").strip(),
                title=title,
                raw_content=content,
                source_domain=urlparse(url.strip()).netloc,
                cc_segment=segment,
                content_length=int(h.get_header("Content-Length") or 0),
                cc_languages=h.get_header("WARC-Identified-Content-Language"),
                truncated=cut,
            )
