"""The WebSocket endpoints a listener may use, tried in turn, and when to try them again after every one failed.

Guarantees: the preferred endpoint (`ws_url`) is tried first and again first after each round of failures; after a
round in which every endpoint failed, none is tried for a back-off that doubles from `WS_RETRY_BASE_S` to
`WS_RETRY_MAX_S` seconds (with jitter), during which the listener polls over HTTP; each endpoint's problem is a
condition (`"ws <url>"`, credentials hidden) and its answer is counted under source "ws".
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tenacity import RetryCallState

from node.chain.heads import Call, action_of
from node.chain.rpc import public_url
from node.observability.conditions import CONDITIONS

log = logging.getLogger("node.chain.listener")

#: Back-off between rounds of WebSocket attempts (every URL failed once), polling over HTTP meanwhile, seconds.
WS_RETRY_BASE_S = 1.0
WS_RETRY_MAX_S = 30.0


class WsEndpoints:
    """`urls` in order of preference; which one is next, and when (monotonic seconds) any is due again."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = [u for u in urls if u]
        self._index = 0
        #: Attempts failed in a row (over all URLs); 0 while one works.
        self.failures = 0
        #: monotonic time before which no WebSocket is tried (HTTP polling meanwhile).
        self.retry_at = 0.0

    def due(self) -> str | None:
        """The URL to try now, or None while none is due (or there are none)."""
        if not self.urls or time.monotonic() < self.retry_at:
            return None
        return self.urls[self._index]

    def healthy(self) -> None:
        """The current endpoint has worked for a while: failures start counting from zero again."""
        self.failures = 0

    def failed(self, url: str, exc: BaseException) -> bool:
        """Marks `url` failed (a condition, counted) and moves to the next; returns True when that ended a round of
        failures (then no WebSocket is due until `retry_at`)."""
        CONDITIONS.count("ws", action_of(exc))
        shown = public_url(url)
        reason = str(exc).replace(url, shown) or type(exc).__name__
        CONDITIONS.set(f"ws {shown}", f"{type(exc).__name__}: {reason}"[:300], blocks_ready=False)
        self.failures += 1
        self._index = (self._index + 1) % len(self.urls)
        if self.failures % len(self.urls):
            log.warning("WebSocket %s failed; trying %s", shown, public_url(self.urls[self._index]))
            return False
        rounds = self.failures // len(self.urls)
        delay = min(WS_RETRY_MAX_S, WS_RETRY_BASE_S * 2 ** (rounds - 1)) * random.uniform(0.8, 1.0)
        self.retry_at = time.monotonic() + delay
        self._index = 0  # the next round starts with the preferred endpoint
        if rounds == 1:
            log.warning("no WebSocket endpoint works; polling over HTTP, trying again with back-off (%.1f s)", delay)
        return True


def counted(request: Call, calls: Counter[str]) -> Call:
    """`request` (a WebSocket's calls), counted by method into `calls` (the RPC pool's counts, which metrics and
    benchmarks read) and, when it fails, by action under source "ws"."""

    async def call(method: str, params: list[Any]) -> Any:
        calls[method] += 1
        try:
            return await request(method, params)
        except Exception as exc:
            CONDITIONS.count("ws", action_of(exc))
            raise

    return call


def say_lost(state: RetryCallState) -> None:
    """Before the listener's back-off: the `listener` condition and one log line with the error and the wait."""
    exc = state.outcome.exception() if state.outcome is not None else None
    delay = state.next_action.sleep if state.next_action is not None else 0.0
    CONDITIONS.set("listener", f"lost the RPC ({type(exc).__name__}); reconnecting with back-off", blocks_ready=False)
    log.info("listener lost the RPC (%s: %s); reconnecting in %.1f s", type(exc).__name__, exc, delay)


def log_key(raw: Any) -> tuple[str, str]:
    """A log's identity as the endpoint wrote it: (block hash, log index), lower-cased."""
    return str(raw.get("blockHash")).lower(), str(raw.get("logIndex")).lower()
