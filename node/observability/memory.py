"""Returns the memory a burst of work freed to the operating system once the node is idle again.

A block of thousands of requests briefly needs a few MB of objects (requests, jobs, receipts, SQLite pages). Once
they are delivered, glibc keeps the freed pages for reuse instead of giving them back, so the node's resident memory
would keep that block's high-water mark for good and creep up with each larger one. `malloc_trim(0)` hands free
pages back (it also releases free pages in the middle of the heap, not only at its top). It is called when the
transaction manager has nothing open, queued or computing, after enough jobs to be worth it: trimming walks the heap
(0.2-0.4 ms in the benchmark's node, whose debug log says what each trim took), and after a handful of jobs there is
nothing to return. Without glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Trim once this many jobs were settled since the last trim, when the node goes idle.
TRIM_AFTER_JOBS = 256


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # musl has no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def rss_kib(pid: int | None = None) -> int | None:
    """Resident set size in KiB of process `pid` (default: this one), or None where /proc is not there (not Linux)
    or the process is gone."""
    try:
        with open(f"/proc/{pid or os.getpid()}/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


class HeapTrimmer:
    """`idle()` trims the heap when at least `after_jobs` jobs were settled (per `settled()`) since the last trim."""

    def __init__(self, settled: Callable[[], int], *, after_jobs: int = TRIM_AFTER_JOBS) -> None:
        self._settled = settled
        self._after_jobs = after_jobs
        self._trim = _glibc_malloc_trim()
        self._last = settled()
        #: Trims done, and KiB of resident memory they returned (for the logs and tests).
        self.trims = 0
        self.returned_kib = 0

    @property
    def available(self) -> bool:
        """Whether this C library can trim (glibc's `malloc_trim`); without it `idle` does nothing."""
        return self._trim is not None

    def idle(self) -> None:
        """Called when the node has nothing open, queued or computing: trims the heap if at least `after_jobs` jobs
        were settled since the last trim (adds to `trims` and `returned_kib`); otherwise does nothing. Never raises."""
        settled = self._settled()
        if self._trim is None or settled - self._last < self._after_jobs:
            return
        self._last = settled
        before, started = rss_kib(), time.perf_counter()
        self._trim(0)
        after = rss_kib()
        self.trims += 1
        returned = max(0, before - after) if before is not None and after is not None else 0
        self.returned_kib += returned
        log.debug(
            "idle after %d job(s): returned %.1f MB of freed heap to the OS in %.1f ms",
            settled,
            returned / 1024,
            (time.perf_counter() - started) * 1000,
        )
