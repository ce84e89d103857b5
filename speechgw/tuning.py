"""Process-wide settings for a CPU inference server, applied once by ``speechgw serve``.

**BLAS threads.** faster-whisper computes each recording's log-mel features with numpy, whose
OpenBLAS runs the filter-bank product on a pool of threads, and those threads then busy-wait
for more work: about 55 ms of CPU per request on 2 cores, taken from the inference threads.
One BLAS thread makes that product a millisecond of the calling thread's time (tiny.en, two
workers on 2 cores: 57.8 -> 66.2 audio s/s, ``bench/cpu_settings.py``). ``threadpoolctl``
sets this at run time for whichever BLAS numpy loaded.

**Allocator.** CTranslate2 allocates its working buffers afresh for every transcription
(hundreds of megabytes for a 10 s recording) and frees them after. glibc serves such blocks
with ``mmap`` or from per-thread heaps that it unmaps once they are free, so the next request
page-faults every page in again, with the kernel zeroing each one: about 53,000 minor faults
per 10 s request on tiny.en, about 200,000 on base, on the inference threads. Keeping freed
memory in one heap makes those faults disappear after the first request (tiny.en, two
workers on 2 cores: 43.8 -> 57.8 audio s/s). The price is that the process keeps its peak
footprint (up to the configured amount of free memory) instead of shrinking between requests.

**Open files.** Every connection is a file descriptor, and a shell's ``ulimit -n`` is 1024 on
Debian (its hard limit far higher). When they run out, the kernel still completes handshakes
the server cannot accept, and clients see resets with nothing in the log (measured: a soft
limit of 60 and 80 idle connections; ``/health`` was reset until they closed). Go programs,
nginx (``worker_rlimit_nofile``) and others raise the soft limit themselves; so does this.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import resource

__all__ = [
    "check_open_files",
    "limit_blas_threads",
    "raise_open_files_limit",
    "retain_freed_memory",
]

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


def limit_blas_threads(threads: int) -> None:
    """Cap the threads of every BLAS library loaded in the process (numpy's OpenBLAS)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
    _LOGGER.info("BLAS libraries limited to %d thread(s)", threads)


_MOST_OPEN_FILES = 1 << 20
"""Linux's default ceiling (``fs.nr_open``); a hard limit above it (some container runtimes
set about 2^30) is not taken whole."""
OWN_FILES = 64
"""Descriptors the server holds besides its connections: listening sockets, the model's
files, the store, the event loop's, with room to spare (about 15 at start)."""


def raise_open_files_limit(max_connections: int) -> None:
    """Raise the soft limit on open files to the hard one, and warn when even that is under
    ``max_connections`` and the server's own files (:func:`check_open_files`).

    Nothing in the process waits with ``select()`` (which fails above descriptor 1023): the
    event loop uses epoll, psycopg and gRPC poll or epoll too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _MOST_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, _MOST_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            _LOGGER.warning("open files: the limit stays %d (raising it failed: %s)", soft, exc)
        else:
            _LOGGER.info("open files: limit raised from %d to %d", soft, target)
    check_open_files(max_connections)


def check_open_files(max_connections: int) -> None:
    """Warn when the limit on open files is under ``max_connections`` and the server's own
    (at start, and when a reloaded config raises ``max_connections``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + OWN_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        _LOGGER.warning(
            "open files limited to %d (hard limit %d): under the %d that limits.max_connections "
            "%d needs; connections beyond it are reset before the server sees them. Raise the "
            "hard limit (systemd: LimitNOFILE=, as in examples/deploy/speechgw.service; a "
            "shell: ulimit -n as root) or lower max_connections",
            soft,
            hard,
            needed,
            max_connections,
        )
