"""Main text of an HTML page, under a time limit per page.

:func:`process_html` does everything that depends on the page's bytes: the
character encoding (a byte-order mark, then the HTTP header's charset, then a
``<meta charset>`` tag or detection by uchardet, each tried strictly, then UTF-8 and
windows-1252; names mapped the WHATWG way by resiliparse, so ``gb2312`` decodes
as ``gbk`` and ``iso-8859-1`` as ``cp1252``), the language the page declares
(``<html lang>``, else a content-language meta tag), its ``<title>``, and the
main text an engine keeps:

- ``resiliparse`` (default, what DCLM used): ``extract_plain_text`` with its
  main-content heuristics, block structure kept as lines;
- ``trafilatura`` (what FineWeb used): ``trafilatura.extract`` with FineWeb's
  settings (``favor_precision``, no comments).

Lines are stripped and blank lines dropped, as in WET text.

:class:`Extractor` runs :func:`process_html` in a helper process when a time
limit is set: a page that takes longer gets its helper killed (a hung C parser
cannot be interrupted any other way) and a fresh helper serves the next page.
The helper is started once per worker process and reused across shards.
"""

from __future__ import annotations

import codecs
import importlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

from ccpipe import lifeline
from ccpipe.errors import ConfigError

log = logging.getLogger(__name__)

ENGINE_FUNCTIONS = {
    "resiliparse": "ccpipe.extract:resiliparse_text",
    "trafilatura": "ccpipe.extract:trafilatura_text",
}
"""Engine name -> ``module:function`` taking ``(html: str, tree: HTMLTree)``, returning the text."""

_STARTUP_SECONDS = 120.0  # a helper's imports and warm-up, not counted in the page limit
_FRAME = struct.Struct("<I")


@dataclass(slots=True)
class Page:
    """What extraction made of one HTML payload."""

    text: str
    title: str
    charset: str
    lang: str | None
    html_chars: int


# ---------------------------------------------------------------- the work itself


def decode_html(payload: bytes, http_charset: str | None) -> tuple[str, str]:
    """``(text, charset)``: the payload decoded with the first encoding that decodes it
    strictly; when none does, the detected one with bad bytes replaced."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding, map_encoding_to_html5

    if payload.startswith(codecs.BOM_UTF8):
        return payload[3:].decode("utf-8", errors="replace"), "utf-8"
    candidates = []
    if http_charset:
        candidates.append(map_encoding_to_html5(http_charset.strip().strip("\"'")))
    detected = detect_encoding(payload, from_html_meta=True)
    candidates += [detected, "utf-8", "cp1252"]
    for enc in dict.fromkeys(c for c in candidates if c):
        try:
            return payload.decode(enc), enc
        except (UnicodeDecodeError, LookupError):
            continue
    return bytes_to_str(payload, detected or "utf-8", errors="replace"), detected or "utf-8"


def declared_language(tree) -> str | None:
    """``<html lang>`` (or ``xml:lang``), else ``<meta http-equiv=content-language>``."""
    root = tree.document.query_selector("html") if tree.document is not None else None
    if root is not None:
        for attr in ("lang", "xml:lang"):
            value = (root.getattr(attr) or "").strip()
            if value:
                return value
    head = tree.head
    if head is not None:
        meta = head.query_selector('meta[http-equiv="content-language" i]')
        if meta is not None:
            value = (meta.getattr("content") or "").strip()
            if value:
                return value
    return None


def resiliparse_text(html: str, tree) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(tree, preserve_formatting=True, main_content=True, list_bullets=True,
                              alt_texts=False, links=False, form_fields=False, noscript=False)


def full_text(html: str, tree) -> str:
    """Every visible text block, menus and footers included: a WET-style conversion
    (for measuring what main-text extraction removes; not an engine)."""
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(tree, preserve_formatting=True, main_content=False, list_bullets=True,
                              alt_texts=False, links=False, form_fields=False, noscript=False)


def trafilatura_text(html: str, tree) -> str:
    import trafilatura

    return trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=True) or ""


def clean_lines(text: str) -> str:
    return "\n".join(s for line in text.split("\n") if (s := line.strip().lstrip("\ufeff").strip()))


def resolve(ref: str) -> Callable[[str, object], str]:
    """The engine function of an engine name or a ``module:function`` path."""
    ref = ENGINE_FUNCTIONS.get(ref, ref)
    module, _, name = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        hint = " (pip install 'ccpipe[trafilatura]')" if "trafilatura" in ref else ""
        raise ConfigError(f"extraction engine {ref!r} cannot be imported: {e}{hint}") from e


def process_html(payload: bytes, http_charset: str | None, engine: Callable[[str, object], str]) -> Page:
    from resiliparse.parse.html import HTMLTree

    html, charset = decode_html(payload, http_charset)
    tree = HTMLTree.parse(html)
    title = clean_lines(tree.title or "").replace("\n", " ")
    return Page(clean_lines(engine(html, tree)), title, charset, declared_language(tree), len(html))


# ---------------------------------------------------------------- time limit


class Timeout(Exception):
    """The page took longer than the time limit; its helper was killed."""


class Extractor:
    """:func:`process_html` with one engine, in a helper process under ``timeout``
    seconds per page (``None``: in this process, no limit).

    ``extract`` returns a :class:`Page`, raises :class:`Timeout`, or raises
    ``RuntimeError`` naming what the engine raised (or that the helper died).
    """

    def __init__(self, engine: str = "resiliparse", timeout: float | None = 5.0):
        self.engine = engine
        self.timeout = timeout
        self._fn: Callable | None = None
        self._proc: subprocess.Popen | None = None
        self._rfd = self._wfd = -1
        self._pid = os.getpid()

    def check(self) -> None:
        """Fail now (ConfigError with an install hint) if the engine cannot be imported."""
        resolve(self.engine)

    def extract(self, payload: bytes, http_charset: str | None) -> Page:
        if self.timeout is None:
            if self._fn is None:
                self._fn = resolve(self.engine)
            try:
                return process_html(payload, http_charset, self._fn)
            except Exception as e:  # noqa: BLE001 - a page the engine fails on is counted, not fatal
                raise RuntimeError(f"{type(e).__name__}: {e}") from e
        if self._proc is None or self._pid != os.getpid():
            self._start()
        self._send((payload, http_charset))
        reply = self._recv(time.monotonic() + self.timeout)
        if reply is None:
            self._stop(kill=True)
            raise Timeout(f"no result within {self.timeout} s")
        status, value = reply
        if status == "ok":
            return Page(*value)
        raise RuntimeError(value)

    def close(self) -> None:
        self._stop(kill=False)

    # the helper process and its two pipes
    def _start(self) -> None:
        self._proc = None
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ccpipe.extract", self.engine, str(req_r), str(rep_w)],
                pass_fds=(req_r, rep_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        finally:
            os.close(req_r)
            os.close(rep_w)
        self._proc, self._rfd, self._wfd, self._pid = proc, rep_r, req_w, os.getpid()
        ready = self._recv(time.monotonic() + _STARTUP_SECONDS)
        if ready is None or ready[0] != "ready":
            self._stop(kill=True)
            detail = ready[1] if ready else f"no answer within {_STARTUP_SECONDS:.0f} s"
            raise ConfigError(f"extraction helper for engine {self.engine!r} did not start: {detail}")

    def _send(self, obj) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(_FRAME.pack(len(data)) + data)
        while view:
            try:
                n = os.write(self._wfd, view)
            except BrokenPipeError:
                return  # the helper died; _recv sees it
            view = view[n:]

    def _read_exact(self, n: int, deadline: float) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._rfd], [], [], left)[0]:
                return None
            chunk = os.read(self._rfd, n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def _recv(self, deadline: float):
        try:
            head = self._read_exact(_FRAME.size, deadline)
            if head is None:
                return None
            body = self._read_exact(_FRAME.unpack(head)[0], deadline)
        except EOFError:
            code = self._proc.wait() if self._proc else None
            self._stop(kill=True)
            return ("error", f"extraction helper exited (code {code})")
        return None if body is None else pickle.loads(body)

    def _stop(self, kill: bool) -> None:
        if self._pid != os.getpid():  # a forked copy: the helper belongs to the parent
            self._proc = None
            return
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                os.close(fd)
        self._rfd = self._wfd = -1
        if self._proc is not None:
            if kill:
                self._proc.kill()
            lifeline.reap(self._proc)
        self._proc = None

    def __del__(self) -> None:
        try:
            self._stop(kill=True)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


_SHARED: dict[tuple[str, float | None, int], Extractor] = {}


def shared_extractor(engine: str, timeout: float | None) -> Extractor:
    """One extractor per (engine, limit) and process, reused across the shards it reads."""
    key = (engine, timeout, os.getpid())
    ex = _SHARED.get(key)
    if ex is None:
        ex = _SHARED[key] = Extractor(engine, timeout)
    return ex


def _serve(engine: str, rfd: int, wfd: int) -> None:
    """The helper: read ``(payload, charset)`` frames, answer ``("ok", Page fields)`` or
    ``("error", message)``, until the parent closes its end."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; EOF ends the helper
    rf = os.fdopen(rfd, "rb")
    wf = os.fdopen(wfd, "wb")

    def answer(obj) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        wf.write(_FRAME.pack(len(data)) + data)
        wf.flush()

    try:
        fn = resolve(engine)
        process_html(b"<html><body><p>warm up</p></body></html>", None, fn)
    except Exception as e:  # noqa: BLE001 - reported to the parent
        answer(("error", f"{type(e).__name__}: {e}"))
        return
    answer(("ready", None))
    while True:
        head = rf.read(_FRAME.size)
        if len(head) < _FRAME.size:
            return
        payload, charset = pickle.loads(rf.read(_FRAME.unpack(head)[0]))
        try:
            p = process_html(payload, charset, fn)
            answer(("ok", (p.text, p.title, p.charset, p.lang, p.html_chars)))
        except Exception as e:  # noqa: BLE001 - one bad page, reported and counted
            answer(("error", f"{type(e).__name__}: {e}"))


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
