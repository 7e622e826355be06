"""Text normalisation with CCNet's exact semantics.

Two normalisations exist in CCNet and both are reproduced here:

* ``normalize_for_dedup``: the key of a line for line-level deduplication. Strip,
  lowercase, every Unicode decimal digit becomes ``0``, then a fixed set of
  Unicode punctuation characters and the control characters 0-31 and 127-159 are
  deleted. Accents and ASCII punctuation are kept.
* ``normalize_for_lm``: what the language model sees. Strip, lowercase, strip
  accents (NFD, drop combining marks), digits become ``0``, the same Unicode
  punctuation is *replaced* by an ASCII equivalent, control characters deleted.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

# Unicode punctuation and its ASCII replacement, as CCNet's normaliser has it
# (including its quirk of mapping the full-width digit one to a double quote).
UNICODE_PUNCT: dict[str, str] = {
    "\uff0c": ",", "\u3002": ".", "\u3001": ",", "\u201e": '"', "\u201d": '"',
    "\u201c": '"', "\u00ab": '"', "\u00bb": '"', "\uff11": '"', "\u300d": '"',
    "\u300c": '"', "\u300a": '"', "\u300b": '"', "\u00b4": "'", "\u2236": ":",
    "\uff1a": ":", "\uff1f": "?", "\uff01": "!", "\uff08": "(", "\uff09": ")",
    "\uff1b": ";", "\u2013": "-", "\u2014": " - ", "\uff0e": ". ", "\uff5e": "~",
    "\u2019": "'", "\u2026": "...", "\u2501": "-", "\u3008": "<", "\u3009": ">",
    "\u3010": "[", "\u3011": "]", "\uff05": "%", "\u25ba": "-",
}
_CONTROL = "".join(map(chr, [*range(0, 32), *range(127, 160)]))
_DIGIT_RE = re.compile(r"\d")  # Unicode-aware: Arabic-Indic, full-width, ... digits too
_DEDUP_DELETE_RE = re.compile("[" + re.escape("".join(UNICODE_PUNCT) + _CONTROL) + "]")
_CONTROL_RE = re.compile("[" + re.escape(_CONTROL) + "]")
_PUNCT_TABLE = str.maketrans(UNICODE_PUNCT)


def normalize_for_dedup(line: str) -> str:
    """The line-dedup key text: strip, lower, digits -> 0, delete punct/control chars."""
    line = line.strip()
    if not line:
        return line
    line = _DIGIT_RE.sub("0", line.lower())
    return _DEDUP_DELETE_RE.sub("", line)


def strip_accents(text: str) -> str:
    """Drop combining marks after NFD decomposition (é -> e, ñ -> n)."""
    nfd = unicodedata.normalize("NFD", text)
    return "".join(c for c in nfd if unicodedata.category(c) != "Mn")


def normalize_for_lm(line: str) -> str:
    """What CCNet feeds SentencePiece/KenLM: lower, no accents, digits 0, ASCII punct."""
    line = line.strip()
    if not line:
        return line
    line = strip_accents(line.lower())
    line = _DIGIT_RE.sub("0", line)
    line = line.translate(_PUNCT_TABLE)
    return _CONTROL_RE.sub("", line)


def line_hash(line: str) -> int:
    """64-bit key of one raw line: first 8 bytes of SHA-1 of its normalised UTF-8,
    read as a little-endian unsigned integer (CCNet's ``str_hash``)."""
    digest = hashlib.sha1(normalize_for_dedup(line).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


_DEDUP_DELETE_KEEP_NL_RE = re.compile(
    "[" + re.escape("".join(UNICODE_PUNCT) + _CONTROL.replace("\n", "")) + "]"
)


def normalize_lines_for_dedup(lines: list[str]) -> list[bytes]:
    """``normalize_for_dedup`` of every line, UTF-8 encoded, in one pass over the text.

    Per-line strip first (as CCNet: stripping before deleting control characters
    matters), then lowercasing, digit folding and deletion run once over the
    lines joined by ``\n``: each is a per-character operation that neither makes
    nor removes a ``\n`` (the only control character kept here, and no stripped
    line contains one), so splitting afterwards gives the same lines, 5x faster
    than a call per line.
    """
    joined = "\n".join([line.strip() for line in lines]).lower()
    joined = _DEDUP_DELETE_KEEP_NL_RE.sub("", _DIGIT_RE.sub("0", joined))
    return joined.encode("utf-8").split(b"\n")


def line_hashes(lines: list[str]) -> np.ndarray:
    """Keys of many lines at once (same values as ``line_hash``), uint64 in line order."""
    sha1 = hashlib.sha1
    buf = b"".join([sha1(b).digest()[:8] for b in normalize_lines_for_dedup(lines)])
    return np.frombuffer(buf, dtype="<u8").astype(np.uint64, copy=False)
