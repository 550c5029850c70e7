"""The heap trimmer with this machine's real glibc: memory a burst freed goes back to the OS, and only when worth it."""

from __future__ import annotations

import sys

import pytest

from node.observability.memory import HeapTrimmer, rss_kib

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc are Linux's")


def freed_but_kept(mb: int) -> list[bytes]:
    """Allocates `mb` MB in 4 kB blocks (glibc's heap, not pymalloc or mmap), frees them all but one block allocated
    after them: the freed pages are below that block, so glibc keeps them. Returns the block that pins them."""
    blocks = [bytes([i % 256]) * 4000 for i in range(mb * 256)]
    pin = [bytes([1]) * 4000]
    del blocks
    return pin


def test_idle_after_a_burst_returns_the_freed_heap() -> None:
    settled = 0
    trimmer = HeapTrimmer(lambda: settled, after_jobs=10)
    assert trimmer.available
    pin = freed_but_kept(64)
    before = rss_kib()
    settled = 10
    trimmer.idle()
    after = rss_kib()
    assert before is not None
    assert after is not None
    assert trimmer.trims == 1
    assert before - after > 32 * 1024, (before, after)  # most of the 64 MB freed came back
    assert abs(trimmer.returned_kib - (before - after)) < 1024  # what it reports is what the process saw
    assert pin


def test_no_trim_until_enough_jobs_were_settled_since_the_last() -> None:
    settled = 5  # jobs settled before the trimmer was made do not count
    trimmer = HeapTrimmer(lambda: settled, after_jobs=10)
    settled = 14
    trimmer.idle()
    assert trimmer.trims == 0
    settled = 15
    trimmer.idle()
    trimmer.idle()  # idle again with nothing new: nothing to return
    assert trimmer.trims == 1
    settled = 24
    trimmer.idle()
    assert trimmer.trims == 1
    settled = 25
    trimmer.idle()
    assert trimmer.trims == 2
