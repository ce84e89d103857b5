"""Process-wide allocator settings for a long-running inference server.

CTranslate2 allocates its working buffers afresh for every transcription (about 200 MB for a
10 s recording on tiny.en) and frees them after. glibc serves such large blocks with ``mmap``
and gives them back to the kernel on ``free``, so the next request page-faults every page in
again: about 53,000 minor faults per 10 s request, with the kernel zeroing each page, on the
inference threads. Keeping freed memory in the heap makes those faults disappear after the
first request: tiny.en on 2 CPU cores ran 11 % faster in-process and 1.25x faster at
saturation (BENCHMARKS.md). The price is that the process keeps its peak footprint (up to the
configured amount of free memory) instead of shrinking between requests.
"""

from __future__ import annotations

import ctypes
import logging
import platform

__all__ = ["retain_freed_memory"]

_LOGGER = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def retain_freed_memory(mib: int) -> bool:
    """Serve large allocations from the heap and keep up to ``mib`` MiB of freed memory there
    (glibc's ``M_MMAP_MAX = 0`` and ``M_TRIM_THRESHOLD``), in one arena (``M_ARENA_MAX = 1``):
    a thread's own arena unmaps a heap as soon as it is entirely free, whatever the trim
    threshold, and CTranslate2's threads free whole heaps after every request. Call it before
    the inference threads start. Returns False, changing nothing, where the C library is not
    glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _LOGGER.info("allocator left as it is: not glibc")
        return False
    libc = ctypes.CDLL(None)
    threshold = min(mib * 1024 * 1024, 2**31 - 1)  # mallopt takes a C int
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, threshold))
    if not all(libc.mallopt(option, value) for option, value in settings):
        _LOGGER.warning("mallopt refused the allocator settings; glibc defaults stay")
        return False
    _LOGGER.info("allocator: large blocks from the heap, up to %d MiB of freed memory kept", mib)
    return True
