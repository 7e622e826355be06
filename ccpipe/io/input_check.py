"""Which input files gave nothing usable, and what they look like.

A batch job fed the wrong files (a gzipped CSV, random bytes, an empty file, a
WARC file of PDFs) must not end in a silent empty success. The reader counts per
shard what it met: WET conversion records and WARC response records
(``docs_read``), every WARC record type (``records_<type>``), unreadable records
(``errors``), responses that gave no text (drops of the ``extract`` step, by
reason), uncompressed bytes (``bytes_uncompressed``) and bytes outside any
record (``bytes_skipped_outside_records``). A shard reads one file, so
:class:`InputTally` adds a run's shard stats up per file and names every file
that

- yielded no document: no readable conversion record and no response with text
  (reason ``input_no_records``), or
- whose uncompressed bytes lie mostly outside WARC records
  (``input_mostly_outside_records``),

with a short description of what the file looks like, e.g. ``empty file (0
bytes)``, ``not gzip: binary data starting 9c 1e 04 ...``, ``gzip holding text
starting 'url,title'``, ``a WARC file with no usable HTML response: 3 response,
3 request record(s); responses skipped: pdf 1, image 1, http_status 1``. A file
the reader could not open or download is named by the reader itself
(``input.on_error: skip``) and counted here as ``input_unreadable``.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from dataclasses import dataclass, field

from ccpipe.errors import InputError
from ccpipe.stats import Stats

log = logging.getLogger(__name__)

MOSTLY_OUTSIDE = 0.5
"""A file whose bytes outside WARC records exceed this share of its uncompressed
bytes is named even when it yielded records."""
_SNIFF_BYTES = 64 * 1024
# reader counters named records_* that count conversion records, not record types
_NOT_RECORD_TYPES = {"records_length_repaired", "records_truncated_kept"}
_LISTED = 10  # files named in the error of a run that read nothing
EXTRACT_STEP = "extract"  # ccpipe.io.warc.STEP_NAME (not imported: that pulls in the extractors)


@dataclass(slots=True)
class FileTally:
    """What the reader met in one input file, over all its shards."""

    docs: int = 0
    """Conversion and response records, readable or not."""
    errors: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    """Response records that gave no document, by reason (``pdf``, ``timeout``, ...)."""
    records: Counter = field(default_factory=Counter)
    """Other WARC records by type (``response``, ``warcinfo``, ...)."""
    bytes_total: int = 0
    bytes_outside: int = 0
    unreadable: str | None = None
    """The reader's message when the file could not be read at all."""

    @property
    def readable_docs(self) -> int:
        return self.docs - sum(self.errors.values()) - sum(self.skipped.values())


class InputTally:
    """Per-file figures of a run, from its shard stats (one input file per shard)."""

    def __init__(self) -> None:
        self.files: dict[str, FileTally] = {}

    def add(self, path: str, stats: Stats) -> None:
        f = self.files.setdefault(path, FileTally())
        f.docs += stats.docs_read
        f.errors.update(stats.errors)
        if EXTRACT_STEP in stats.steps:
            f.skipped.update(stats.steps[EXTRACT_STEP].dropped)
        for key, n in stats.counters.items():
            if key.startswith("records_") and key not in _NOT_RECORD_TYPES:
                f.records[key[len("records_"):]] += n
        f.bytes_total += stats.counters.get("bytes_uncompressed", 0)
        f.bytes_outside += stats.counters.get("bytes_skipped_outside_records", 0)
        if path in stats.file_problems:
            f.unreadable = stats.file_problems[path]

    def problems(self) -> dict[str, tuple[str, str]]:
        """``path -> (reason, description)`` for every file with a problem."""
        out: dict[str, tuple[str, str]] = {}
        for path, f in self.files.items():
            if f.unreadable is not None:
                out[path] = ("input_unreadable", f.unreadable)
            elif f.readable_docs == 0:
                out[path] = ("input_no_records", describe_empty(path, f))
            elif f.bytes_total and f.bytes_outside > MOSTLY_OUTSIDE * f.bytes_total:
                out[path] = ("input_mostly_outside_records",
                             f"{f.bytes_outside / f.bytes_total:.0%} of its {_size(f.bytes_total)} (uncompressed) "
                             f"lie outside WARC records; {f.readable_docs} document(s) read")
        return out

    def apply(self, total: Stats) -> None:
        """Name every problem file in the run's stats and count it by reason."""
        for path, (reason, text) in sorted(self.problems().items()):
            total.file_problems[path] = text
            total.file_errors[reason] += 1


def describe_empty(path: str, f: FileTally) -> str:
    """Why a file gave no document, and what it looks like."""
    if f.records.get("response"):
        listing = ", ".join(f"{n} {t}" for t, n in sorted(f.records.items(), key=lambda kv: (-kv[1], kv[0])))
        why = ", ".join(f"{k} {v}" for k, v in sorted((f.skipped + f.errors).items(), key=lambda kv: (-kv[1], kv[0])))
        return f"a WARC file with no usable HTML response: {listing} record(s); responses skipped: {why}"
    if f.docs:
        errs = ", ".join(f"{k} {v}" for k, v in f.errors.most_common())
        return f"{f.docs} conversion record(s), none readable ({errs})"
    if f.records:
        listing = ", ".join(f"{n} {t}" for t, n in sorted(f.records.items(), key=lambda kv: (-kv[1], kv[0])))
        if f.records.keys() & {"request", "resource", "revisit"}:
            return (f"a WARC file with no response record: {listing} record(s) (ccpipe reads WET conversion "
                    "records and WARC response records)")
        return f"WARC records but no conversion record: {listing}"
    return f"{sniff(path)}; no WARC record in it"


def sniff(path: str) -> str:
    """What the first bytes of a file look like: empty, gzip or not, text or binary."""
    from ccpipe.io.http import Backoff
    from ccpipe.io.wet import open_binary

    try:
        with open_binary(path, Backoff(attempts=1, timeout=30.0)) as fh:  # a description: one try
            head = fh.read(_SNIFF_BYTES)
    except Exception as e:  # noqa: BLE001 - a description, never a new failure
        return f"could not look inside ({e})"
    if not head:
        return "empty file (0 bytes)"
    if head[:2] == b"\x1f\x8b":
        try:
            inner = zlib.decompressobj(31).decompress(head, 4096)
        except zlib.error as e:
            return f"gzip data that does not decompress ({e})"
        return f"gzip holding {_preview(inner)}" if inner else "gzip holding nothing"
    return f"not gzip: {_preview(head)}"


def _preview(data: bytes) -> str:
    sample = data[:400]
    text = sample.decode("utf-8", errors="replace")
    printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
    if text and printable / len(text) > 0.95 and "\ufffd" not in text[:-3]:
        first = text.splitlines()[0] if text.strip() else text
        return f"text starting {first[:60]!r}"
    return "binary data starting " + sample[:8].hex(" ")


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def report(stats: Stats) -> None:
    """Log every problem file; raise when no input yielded a document."""
    for path, text in sorted(stats.file_problems.items()):
        log.warning("input %s: %s", path, text)
    skipped = sum(stats.steps[EXTRACT_STEP].dropped.values()) if EXTRACT_STEP in stats.steps else 0
    if stats.docs_read - stats.docs_errored - skipped > 0:
        return
    named = sorted(stats.file_problems.items())
    listing = "; ".join(f"{p}: {t}" for p, t in named[:_LISTED])
    more = f"; and {len(named) - _LISTED} more" if len(named) > _LISTED else ""
    raise InputError(
        "no input yielded a document (a readable WET record or an HTML response with text)"
        + (f" ({listing}{more})" if named else "")
        + ". Check the input paths: ccpipe reads Common Crawl WET and WARC files (*.warc.wet.gz, *.warc.gz)"
    )
