"""MinHash signatures and LSH band keys: the numeric core of near-duplicate removal.

Shingles are word 5-grams (``ngram``) of the normalised text: lowercase, every
ASCII digit -> ``0``, ASCII punctuation, ASCII whitespace and NUL separate words.

Hashing is vectorised, with no Python object per word: the normalised
UTF-8 bytes get a prefix sum of ``byte * K**i`` (mod 2^64), so a word's polynomial
hash is ``(S[end] - S[start]) * K**-start`` (K is odd, so it has an inverse mod 2^64);
word hashes are mixed and combined into shingle hashes the same way, with a second
constant. Splitting into ``bytes`` words and one CRC-32 call per word cost 1.6x
more on the benchmark documents, and datasketch's default SHA-1 per shingle ~10x.

Several documents are hashed together (:func:`shingle_hashes_many`): their
normalised bytes are joined with NUL and go through the numpy passes once, which
saves the fixed cost of ~25 numpy calls per document.

The signature itself is datasketch's: a ``MinHash`` with scheme ``affine32`` (a
murmur finaliser, then ``num_perm`` affine permutations). A document's hash array
is handed to ``update_batch`` as a single item (one per :data:`CHUNK` hashes) with
an identity ``hashfunc``, so datasketch's own numpy code permutes the whole array
at once instead of first looping over ~1,000 Python ints per document; the values
are bit-identical to feeding the hashes one by one (``tests/test_minhash.py``
checks it against a plain ``MinHash.update_batch``), and signatures compare with
``LeanMinHash.jaccard``.

Band keys: the signature is cut into ``bands`` bands of ``rows`` values; each band
becomes one 64-bit key (the band index is mixed in, so equal values in different
bands never collide). Two documents are candidates when any key is equal.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np


def _byte_class(c: int) -> int:
    ch = chr(c)
    if c == 0 or ch in " \t\n\r\x0b\x0c" or (33 <= c < 127 and not ch.isalnum()):
        return 0  # separator
    if ch.isdigit():
        return ord("0")
    return ord(ch.lower()) if c < 128 else c


# Normalisation of the UTF-8 bytes in one C pass (bytes.translate): separators -> NUL,
# ASCII digits -> "0", ASCII capitals -> small letters (so an ASCII text needs no
# str.lower()); a regex over the str was 10x slower.
_TABLE = bytes(_byte_class(c) for c in range(256))
_M64 = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)
_K_BYTE = 0x100000001B3  # odd: invertible mod 2^64
_K_WORD = 0xC2B2AE3D27D4EB4F

EMPTY = np.uint32(0xFFFFFFFF)
"""Signature value of a document with no shingle (every row at the maximum)."""


class _Powers:
    """``K**i`` and ``K**-i`` mod 2^64 for i < n, grown by doubling on demand."""

    def __init__(self, k: int):
        self.k, self.kinv = k, pow(k, -1, 1 << 64)
        self.fwd = np.ones(1, np.uint64)
        self.inv = np.ones(1, np.uint64)

    def upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        while self.fwd.size < n:
            m = self.fwd.size
            step, step_inv = np.uint64(pow(self.k, m, 1 << 64)), np.uint64(pow(self.kinv, m, 1 << 64))
            self.fwd = np.concatenate([self.fwd, self.fwd * step])  # uint64 arrays wrap mod 2^64
            self.inv = np.concatenate([self.inv, self.inv * step_inv])
        return self.fwd, self.inv


_BYTE_POW = _Powers(_K_BYTE)
_WORD_POW = _Powers(_K_WORD)


def _normalised(text: str) -> bytes:
    # str.isascii() is O(1) (CPython keeps the flag); for ASCII, lower() == the table's
    return (text if text.isascii() else text.lower()).encode("utf-8").translate(_TABLE)


def _split_words(text: str) -> list[bytes]:
    """Normalised words as ``bytes`` (for exact Jaccard; the hashes never build them)."""
    return [w for w in _normalised(text).split(b"\x00") if w]


def _window_sums(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, pw: _Powers) -> np.ndarray:
    """Polynomial hash of ``values[s:e]`` for each window, from one prefix sum."""
    n = values.size
    fwd, inv = pw.upto(n)
    prefix = np.empty(n + 1, np.uint64)
    prefix[0] = 0
    np.cumsum(values * fwd[:n], out=prefix[1:])
    return (prefix[ends] - prefix[starts]) * inv[starts]


def _mix(h: np.ndarray) -> np.ndarray:
    h = (h ^ (h >> _SHIFT)) * _M64
    return h ^ (h >> _SHIFT)


def _word_spans(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of the runs of non-NUL bytes (the words)."""
    inword = np.zeros(buf.size + 2, bool)
    np.not_equal(buf, 0, out=inword[1:-1])
    edges = np.flatnonzero(inword[1:] != inword[:-1])  # start, end, start, end, ...
    return edges[0::2], edges[1::2]


def _hash_words(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    if starts.size == 0:
        return np.zeros(0, np.uint64)
    with np.errstate(over="ignore"):
        return _mix(_window_sums(buf.astype(np.uint64), starts, ends, _BYTE_POW))


def word_hashes(text: str) -> np.ndarray:
    """64-bit hashes of the normalised words of ``text``, in order (uint64)."""
    buf = np.frombuffer(_normalised(text), np.uint8)
    return _hash_words(buf, *_word_spans(buf))


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """32-bit hashes of the word ``ngram``-grams of ``text``, in order (uint32).

    A text shorter than ``ngram`` words is one shingle; an empty text has none.
    """
    return shingle_hashes_many([text], ngram)[0]


BLOCK_BYTES = 1 << 18
"""Normalised bytes hashed per block by :func:`shingle_hashes_many`."""


def shingle_hashes_many(texts: Sequence[str], ngram: int = 5) -> list[np.ndarray]:
    """:func:`shingle_hashes` of each text, hashed in blocks of several documents.

    A block's normalised texts are joined with NUL (a separator, so no word spans two
    documents) and hashed by the same numpy passes as one document; shingle windows
    stay inside their document. The hashes are offset-invariant, so each document gets
    exactly the values it gets alone, without ~25 numpy calls of overhead per document.
    """
    out: list[np.ndarray] = []
    block: list[bytes] = []
    size = 0
    for t in texts:
        b = _normalised(t)
        if block and size + len(b) > BLOCK_BYTES:
            out.extend(_block_shingles(block, ngram))
            block, size = [], 0
        block.append(b)
        size += len(b) + 1
    if block:
        out.extend(_block_shingles(block, ngram))
    return out


def _block_shingles(norm: list[bytes], ngram: int) -> list[np.ndarray]:
    buf = np.frombuffer(b"\x00".join(norm), np.uint8)
    w_start, w_end = _word_spans(buf)
    wh = _hash_words(buf, w_start, w_end)
    doc_start = np.zeros(len(norm), np.int64)  # byte offset of each document
    np.cumsum(np.fromiter((len(b) + 1 for b in norm[:-1]), np.int64, len(norm) - 1), out=doc_start[1:])
    first = np.searchsorted(w_start, doc_start)  # index of each document's first word
    n_words = np.diff(first, append=wh.size)
    n = np.minimum(ngram, n_words)  # a document of fewer words is one shingle
    count = np.where(n_words > 0, n_words - n + 1, 0)
    bounds = np.cumsum(count)
    if bounds[-1] == 0:
        return [np.zeros(0, np.uint32) for _ in norm]
    # shingle j of document k starts at word first[k] + j: a ramp restarted per document
    starts = np.arange(bounds[-1]) + np.repeat(first - (bounds - count), count)
    with np.errstate(over="ignore"):
        h = _mix(_window_sums(wh, starts, starts + np.repeat(n, count), _WORD_POW))
    h32 = (h >> np.uint64(32)).astype(np.uint32)
    return np.split(h32, bounds[:-1])


CHUNK = 512
"""Shingle hashes per ``update_batch`` call: 512 x 128 uint32 is 256 kB per temporary,
so datasketch's temporaries stay in the core's L2 cache.
On the benchmark documents (3,000, median 505 shingles, 10% over 2,550) the signature
part took 251 us per document with 512, 270-303 with 1,024-4,096 and 317 unchunked."""


def sorted_unique(h: np.ndarray) -> np.ndarray:
    """``np.unique(h)`` for a 1-d array: sort, then drop repeats (numpy 2.4's
    ``np.unique`` took 79 us on 941 uint32 values, this 7 us)."""
    s = np.sort(h)
    if s.size < 2:
        return s
    keep = np.empty(s.size, bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _identity(x):
    return x


@lru_cache(maxsize=8)
def _template(num_perm: int, seed: int):
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity, scheme="affine32")


def signatures(texts: Iterable[str], num_perm: int = 128, seed: int = 1, ngram: int = 5) -> np.ndarray:
    """MinHash signatures of many texts (datasketch ``MinHash``): ``N x num_perm`` uint32.

    Rows of texts without any shingle are all :data:`EMPTY` (see :func:`has_shingles`).
    """
    return signatures_of(shingle_hashes_many(list(texts), ngram), num_perm, seed)


def signatures_of(shingle_sets: Sequence[np.ndarray], num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """:func:`signatures` from precomputed :func:`shingle_hashes`.

    One datasketch ``MinHash`` is reused: ``clear()``, then ``update_batch`` with the
    document's hash array as one item per :data:`CHUNK` hashes. ``MinHash.bulk`` builds
    a MinHash per document (parsing the permutations each time), which measured ~10%
    slower here for bit-identical values.
    """
    from datasketch import MinHash

    tpl = _template(num_perm, seed)
    m = MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity, permutations=tpl.permutations, scheme="affine32")
    out = np.full((len(shingle_sets), num_perm), EMPTY, np.uint32)  # N x num_perm
    for i, s in enumerate(shingle_sets):
        if s.size:
            m.clear()
            for j in range(0, s.size, CHUNK):  # the min over chunks = the min over all
                m.update_batch([s[j : j + CHUNK]])  # one item: an array (see the module docstring)
            out[i] = m.hashvalues
    return out


def has_shingles(sigs: np.ndarray) -> np.ndarray:
    return ~(sigs == EMPTY).all(axis=1)


def lean(sig: np.ndarray, seed: int = 1):
    """A datasketch ``LeanMinHash`` of one signature row (for ``.jaccard``)."""
    from datasketch import LeanMinHash

    return LeanMinHash(seed=seed, hashvalues=sig, scheme="affine32")


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise ``LeanMinHash.jaccard`` of two ``N x num_perm`` signature arrays."""
    return (a == b).mean(axis=1)


def _false_positive(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

    return quad(lambda s: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)[0]


def _false_negative(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

    return quad(lambda s: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)[0]


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive + negative areas of the
    S-curve around ``threshold``: datasketch's ``MinHashLSH`` rule (0.8 / 128 -> 9 x 13)."""
    best, best_err = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = fp_weight * _false_positive(threshold, b, r) + fn_weight * _false_negative(threshold, b, r)
            if err < best_err:
                best, best_err = (b, r), err
    return best


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``N x bands`` uint64 keys; equal key = equal band (up to 2^-64 collisions)."""
    n = sigs.shape[0]
    if bands * rows > sigs.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} hash values, signatures have {sigs.shape[1]}")
    v = sigs[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)  # N x bands x rows
    h = np.broadcast_to((np.arange(bands, dtype=np.uint64) + np.uint64(1)) * _M64, (n, bands)).copy()
    with np.errstate(over="ignore"):
        for k in range(rows):
            h = (h ^ v[:, :, k]) * _M64
            h ^= h >> _SHIFT
    return h  # N x bands


def set_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted unique shingle-hash arrays."""
    inter = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - inter
    return inter / union if union else 0.0


def exact_jaccard(a: str, b: str, ngram: int = 5) -> float:
    """Exact Jaccard of two texts' shingle sets, with the same normalisation."""
    sa = set(_shingle_strings(a, ngram))
    sb = set(_shingle_strings(b, ngram))
    return len(sa & sb) / max(1, len(sa | sb))


def _shingle_strings(text: str, ngram: int) -> Sequence[bytes]:
    ws = _split_words(text)
    if len(ws) <= ngram:
        return [b" ".join(ws)] if ws else []
    return [b" ".join(ws[i : i + ngram]) for i in range(len(ws) - ngram + 1)]
