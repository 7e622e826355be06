"""MinHash signatures and LSH band keys: the numeric core of near-duplicate removal.

Shingles are word 5-grams (``ngram``) of the normalised text: lowercase, every
ASCII digit -> ``0``, ASCII punctuation, ASCII whitespace and NUL separate words.

Hashing is vectorised per document, with no Python object per word: the normalised
UTF-8 bytes get a prefix sum of ``byte * K**i`` (mod 2^64), so a word's polynomial
hash is ``(S[end] - S[start]) * K**-start`` (K is odd, so it has an inverse mod 2^64);
word hashes are mixed and combined into shingle hashes the same way, with a second
constant. Splitting into ``bytes`` words and one CRC-32 call per word cost 1.6x
more on the benchmark documents, and datasketch's default SHA-1 per shingle ~10x.

The signature itself is datasketch's: a ``MinHash`` with scheme ``affine32`` (a
murmur finaliser, then ``num_perm`` affine permutations). Each document's hash
array is handed to ``update_batch`` as a single item with an identity ``hashfunc``,
so datasketch's own numpy code permutes the whole array at once instead of first
looping over ~1,000 Python ints per document; the values are bit-identical to
feeding the hashes one by one (``tests/test_minhash.py`` checks it against a plain
``MinHash.update_batch``), and signatures compare with ``LeanMinHash.jaccard``.

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
    return ord("0") if ch.isdigit() else c


# Normalisation of the lowercased UTF-8 bytes in one C pass (bytes.translate):
# separators -> NUL, ASCII digits -> "0"; a regex over the str was 10x slower.
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
    return text.lower().encode("utf-8").translate(_TABLE)


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


def word_hashes(text: str) -> np.ndarray:
    """64-bit hashes of the normalised words of ``text``, in order (uint64)."""
    buf = np.frombuffer(_normalised(text), np.uint8)
    inword = np.zeros(buf.size + 2, bool)
    np.not_equal(buf, 0, out=inword[1:-1])
    edges = np.flatnonzero(inword[1:] != inword[:-1])  # start, end, start, end, ...
    if edges.size == 0:
        return np.zeros(0, np.uint64)
    with np.errstate(over="ignore"):
        return _mix(_window_sums(buf.astype(np.uint64), edges[0::2], edges[1::2], _BYTE_POW))


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """32-bit hashes of the word ``ngram``-grams of ``text``, in order (uint32).

    A text shorter than ``ngram`` words is one shingle; an empty text has none.
    """
    wh = word_hashes(text)
    if wh.size == 0:
        return np.zeros(0, np.uint32)
    n = min(ngram, wh.size)
    starts = np.arange(wh.size - n + 1)
    with np.errstate(over="ignore"):
        h = _mix(_window_sums(wh, starts, starts + n, _WORD_POW))
    return (h >> np.uint64(32)).astype(np.uint32)


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
    return signatures_of([shingle_hashes(t, ngram) for t in texts], num_perm, seed)


def signatures_of(shingle_sets: Sequence[np.ndarray], num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """:func:`signatures` from precomputed :func:`shingle_hashes`.

    One datasketch ``MinHash`` is reused: ``clear()``, then ``update_batch`` with the
    document's whole hash array as one item. ``MinHash.bulk`` builds a MinHash per
    document (parsing the permutations each time), which measured ~10% slower here for
    bit-identical values.
    """
    from datasketch import MinHash

    tpl = _template(num_perm, seed)
    m = MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity, permutations=tpl.permutations, scheme="affine32")
    out = np.full((len(shingle_sets), num_perm), EMPTY, np.uint32)  # N x num_perm
    for i, s in enumerate(shingle_sets):
        if s.size:
            m.clear()
            m.update_batch([s])  # one item: the whole array (see the module docstring)
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
