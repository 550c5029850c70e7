"""Time as the chain tells it: deadlines, intervals and expiry are judged by the head block's timestamp.

A node's machine clock can be minutes away from the chain's (a devnet with a warped clock, an L2 whose sequencer
lags, a VM whose clock drifted). A request's deadline is a chain timestamp, so the node asks "has the chain passed
it?" with the newest head's timestamp plus the (monotonic) time since that head arrived, and never with `time.time()`.
"""

from __future__ import annotations

import time


class ChainClock:
    """`now()` is the chain's time in unix seconds: the newest head's timestamp plus the monotonic seconds since the
    node saw it. Before any head it is the machine's clock (the only estimate there is)."""

    def __init__(self) -> None:
        self._head_ts: float | None = None
        self._head_number = -1
        self._seen_at = 0.0

    def on_head(self, timestamp: int, number: int | None = None) -> None:
        """Records a head's timestamp (unix seconds): the newest head's word is taken, even when it is older than the
        one held (a devnet's warped clock), so one wrong head is corrected by the next. (The listener checks a head
        that jumps far in number or time against the chain before it gets here.) `number` is kept for `/status`."""
        self._head_ts = float(timestamp)
        if number is not None:
            self._head_number = number
        self._seen_at = time.monotonic()

    @property
    def synced(self) -> bool:
        """Whether a head was seen (otherwise `now()` is the machine's clock)."""
        return self._head_ts is not None

    def now(self) -> float:
        """The chain's time now, in unix seconds (float)."""
        if self._head_ts is None:
            return time.time()
        return self._head_ts + (time.monotonic() - self._seen_at)

    def skew_s(self) -> float:
        """The machine's clock minus the chain's, in seconds (positive: the machine is ahead)."""
        return time.time() - self.now()
