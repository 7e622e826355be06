"""HTTP(S) inputs, read the way a polite crawler reads: streamed, resumed, backed off.

:class:`HttpFile` is a seekable read-only file over one URL (the WET reader
needs ``read``/``seek``/``tell``). It streams a GET from the current position
(``Range: bytes=N-``) and, when a request fails, retries it:

- **what is retried**: connection errors, timeouts, a stream cut short, and the
  statuses that go away by themselves (408, 425, 429, 500, 502, 503, 504). Any
  other status (404, 403, 410, ...) will not: it fails at once, status in the
  message.
- **when**: exponential backoff, ``base_seconds * 2**(n-1)`` capped at
  ``max_seconds``, with "equal jitter" (half of it fixed, half random) so many
  workers hitting one host spread out; a ``Retry-After`` header (seconds or an
  HTTP date) is obeyed when it asks for longer, up to 10 minutes.
- **how often**: ``attempts`` requests in a row without progress; a stream that
  breaks after delivering data resumes where it stopped and starts a new count.

With the defaults (8 attempts, 2 s doubling up to 60 s) a host that stays down
is given about three minutes. The error says what happened last: ``HTTP 503
Service Unavailable ... after 8 attempts over 3m05s``. Whether a file that stays
broken fails the run or is counted and skipped is the reader's policy
(``input.on_error``), not this module's.
"""

from __future__ import annotations

import email.utils
import io
import logging
import random
import time
from dataclasses import dataclass

from ccpipe.errors import InputError

log = logging.getLogger(__name__)

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
RETRY_AFTER_CAP = 600.0
"""Longest ``Retry-After`` obeyed, in seconds."""
_PROGRESS_RESETS = 1 << 20  # bytes of progress after which a new failure count starts


@dataclass(frozen=True, slots=True)
class Backoff:
    """How failed requests are retried (``input.retry_*`` in the config)."""

    attempts: int = 8
    base_seconds: float = 2.0
    max_seconds: float = 60.0
    timeout: float = 60.0
    """Seconds to wait for a connection or for the next bytes."""

    def delay(self, failures: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th failure in a row."""
        full = min(self.max_seconds, self.base_seconds * 2 ** max(0, failures - 1))
        wait = full / 2 + (rng or random).uniform(0, full / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, RETRY_AFTER_CAP))
        return wait


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After``: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpStatusError(InputError):
    """An HTTP request failed for good; ``status`` is None for a network failure."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # raised in workers, pickled back to the driver
        return (type(self), (str(self), self.status))


def _seconds(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.1f}s"


class HttpFile(io.RawIOBase):
    """A read-only, seekable file over an http(s) URL, with retries (see module doc)."""

    def __init__(self, url: str, backoff: Backoff | None = None):
        super().__init__()
        self.url = url
        self.backoff = backoff or Backoff()
        self._pos = 0
        self._resp = None
        self._eof = False
        self.size: int | None = None
        self._failures = 0  # failed requests in a row (see _PROGRESS_RESETS)
        self._failing_since = 0.0
        self._progress = 0  # bytes read since the last failure
        import requests

        self._session = requests.Session()

    # -- io.RawIOBase ------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            if self.size is None:
                self._open()
            offset += self.size or 0
        if offset < 0:
            raise ValueError("negative seek position")
        if offset != self._pos:
            self._drop()
            self._pos = offset
            self._eof = False
        return self._pos

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        if n == 0 or self._eof:
            return b""
        while True:
            try:
                if self._resp is None:
                    self._open()
                    if self._eof:
                        return b""
                data = self._resp.raw.read(n, decode_content=False)
                if not data:
                    if self.size is not None and self._pos < self.size:
                        raise ConnectionError(f"stream ended at byte {self._pos} of {self.size}")
                    self._eof = True
                    self._drop()
                    return b""
                self._pos += len(data)
                self._progress += len(data)
                if self._progress >= _PROGRESS_RESETS:
                    self._failures = 0
                return data
            except HttpStatusError:
                raise
            except _Retry as r:
                status, retry_after, what = r.status, r.retry_after, r.what
            except Exception as e:  # noqa: BLE001 - network errors come in many types
                if not _is_network_error(e):
                    raise
                status, retry_after, what = None, None, f"{type(e).__name__}: {e}"
            self._drop()
            if self._failures == 0:
                self._failing_since = time.monotonic()
            self._failures += 1
            self._progress = 0
            if self._failures >= self.backoff.attempts:
                raise HttpStatusError(
                    f"{self.url}: {what}; still failing after {self._failures} attempts over "
                    f"{_seconds(time.monotonic() - self._failing_since)}", status) from None
            wait = self.backoff.delay(self._failures, retry_after)
            log.warning("%s: %s; retry %d/%d in %s", self.url, what, self._failures, self.backoff.attempts - 1,
                        _seconds(wait))
            time.sleep(wait)

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._drop()
        self._session.close()
        super().close()

    # -- requests ----------------------------------------------------------------------
    def _drop(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def _open(self) -> None:
        """One GET from the current position; raises _Retry or HttpStatusError."""
        headers = {"Accept-Encoding": "identity"}
        if self._pos:
            headers["Range"] = f"bytes={self._pos}-"
        resp = self._session.get(self.url, headers=headers, stream=True, timeout=self.backoff.timeout)
        code = resp.status_code
        if code == 416:  # the range starts at or past the end
            resp.close()
            self._eof = True
            return
        if code in TRANSIENT_STATUS or (code >= 500 and code != 501):
            resp.close()
            raise _Retry(code, parse_retry_after(resp.headers.get("Retry-After")), f"HTTP {code} {resp.reason}")
        if code not in (200, 206):
            resp.close()
            raise HttpStatusError(
                f"{self.url}: HTTP {code} {resp.reason} (not retried: this status does not go away by itself)", code)
        length = resp.headers.get("Content-Length")
        if code == 206:
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]
            self.size = int(total) if total.isdigit() else self.size
        elif length is not None and length.isdigit():
            self.size = int(length)
        self._resp = resp
        if code == 200 and self._pos:  # the server ignored the range: skip to the position
            left = self._pos
            while left:
                got = resp.raw.read(min(left, 1 << 20), decode_content=False)
                if not got:
                    raise ConnectionError("stream ended before the requested position")
                left -= len(got)


class _Retry(Exception):
    def __init__(self, status: int | None, retry_after: float | None, what: str):
        super().__init__(what)
        self.status, self.retry_after, self.what = status, retry_after, what


def _is_network_error(e: BaseException) -> bool:
    import requests
    import urllib3.exceptions

    return isinstance(e, (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ConnectionError))


def get_bytes(url: str, backoff: Backoff | None = None) -> bytes:
    """The whole body of ``url``, with :class:`HttpFile`'s retries."""
    with HttpFile(url, backoff) as f:
        return f.readall()


def content_length(url: str, timeout: float = 30.0) -> int | None:
    """The size a HEAD request reports (one attempt; None when unknown)."""
    import requests

    try:
        r = requests.head(url, allow_redirects=True, timeout=timeout, headers={"Accept-Encoding": "identity"})
    except requests.RequestException:
        return None
    length = r.headers.get("Content-Length", "")
    return int(length) if r.ok and length.isdigit() else None
