"""Process-wide allocator settings for numpy/torch heavy processes (glibc only).

glibc serves every allocation above ``M_MMAP_THRESHOLD`` (128 KiB until the first such
block is freed) with a fresh ``mmap`` and gives it back on ``free``; it also trims the
heap top once more than ``M_TRIM_THRESHOLD`` is free. Array code that allocates and frees
the same few megabytes per call (a 256-pair Stein length allocates ~12 MB temporaries; a
MinHash permutation ~0.5 MB per document) then pays page faults on every call. Raising
both thresholds keeps such blocks in the heap for reuse:

* upper-bound distances (384-d, 32 points, 256 pairs per call): 1,800 -> 2,500-3,300
  pairs/s on this project's 2-core CI machine (``bench/bench_geometry.py``);
* the cost is memory kept after a peak: at most ``trim_mb`` of free heap stays mapped,
  and blocks over ``mmap_mb`` still go straight to ``mmap``.

Set ``CCPIPE_MALLOC_TUNE=0`` to leave the allocator alone. Elsewhere than glibc (macOS,
musl) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done: tuple[int, int] | None = None


def tune_malloc(mmap_mb: int = 32, trim_mb: int = 64) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when applied.

    Idempotent; safe to call from every entry point and worker initialiser.
    """
    global _done
    if _done == (mmap_mb, trim_mb):
        return True
    if os.environ.get("CCPIPE_MALLOC_TUNE", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_mb << 20) == 1 and mallopt(_M_TRIM_THRESHOLD, trim_mb << 20) == 1
    if ok:
        _done = (mmap_mb, trim_mb)
    else:
        log.debug("mallopt refused the thresholds; allocator left as it was")
    return ok
