"""MinHash signatures and LSH band keys: the numeric core of near-duplicate removal.

Shingles are word 5-grams (``ngram``) of the normalised text: lowercase, every
digit -> ``0``, punctuation -> space, split on whitespace. Each word is hashed once
(CRC-32, in C) and a shingle's 32-bit hash is a mix of its words' hashes computed
for all shingles of a document at once in numpy; the per-shingle Python call of
datasketch's default SHA-1 path was the bottleneck (about 10x slower). The
signature itself is datasketch's: ``MinHash.bulk`` (scheme ``affine32``: a
murmur finaliser then ``num_perm`` affine permutations), so signatures compare with
``LeanMinHash.jaccard`` and with any other datasketch MinHash built with the same
``num_perm``, ``seed`` and hash function.

Band keys: the signature is cut into ``bands`` bands of ``rows`` values; each band
becomes one 64-bit key (the band index is mixed in, so equal values in different
bands never collide). Two documents are candidates when any key is equal.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

# ASCII punctuation -> space, ASCII digits -> "0", applied to the UTF-8 bytes of the
# lowercased text in one C pass (bytes.translate); a regex over the str was 10x slower.
_TABLE = bytes(
    ord("0") if chr(c).isdigit() else ord(" ") if (33 <= c < 127 and not chr(c).isalnum()) else c
    for c in range(256)
)
_M64 = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)

EMPTY = np.uint32(0xFFFFFFFF)
"""Signature value of a document with no shingle (every row at the maximum)."""


def _split_words(text: str) -> list[bytes]:
    """Normalised words: lowercase, ASCII digits -> 0, ASCII punctuation separates words."""
    return text.lower().encode("utf-8").translate(_TABLE).split()


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """32-bit hashes of the word ``ngram``-grams of ``text`` (unique, uint32).

    A text shorter than ``ngram`` words is one shingle; an empty text has none.
    """
    ws = _split_words(text)
    if not ws:
        return np.zeros(0, np.uint32)
    wh = np.fromiter(map(zlib.crc32, ws), dtype=np.uint64, count=len(ws))
    n = min(ngram, len(ws))
    m = len(ws) - n + 1
    # polynomial mix of n consecutive word hashes, position-dependent, mod 2^64
    h = np.zeros(m, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = (h ^ wh[k : k + m]) * _M64
            h ^= h >> _SHIFT
    return (h >> np.uint64(32)).astype(np.uint32)


def _identity(x: int) -> int:
    return x


@lru_cache(maxsize=8)
def _template(num_perm: int, seed: int):
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity, scheme="affine32")


def signatures(texts: Iterable[str], num_perm: int = 128, seed: int = 1, ngram: int = 5) -> np.ndarray:
    """MinHash signatures of many texts with ``MinHash.bulk``: ``N x num_perm`` uint32.

    Rows of texts without any shingle are all :data:`EMPTY` (see :func:`has_shingles`).
    A batched variant (all shingles of many documents through the permutations at
    once, ``minimum.reduceat`` per document) measured no faster here: the per
    document ``S x num_perm`` matrix of ``update_batch`` stays in cache.
    """
    return signatures_of([shingle_hashes(t, ngram) for t in texts], num_perm, seed)


def signatures_of(shingle_sets: Sequence[np.ndarray], num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """:func:`signatures` from precomputed :func:`shingle_hashes`."""
    from datasketch import MinHash

    shingles = [s.tolist() for s in shingle_sets]
    if not shingles:
        return np.zeros((0, num_perm), np.uint32)
    tpl = _template(num_perm, seed)
    mhs = MinHash.bulk(shingles, num_perm=num_perm, seed=seed, hashfunc=_identity,
                       permutations=tpl.permutations, scheme="affine32")
    return np.stack([m.hashvalues for m in mhs]).astype(np.uint32, copy=False)  # N x num_perm


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
