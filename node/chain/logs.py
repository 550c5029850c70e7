"""Reads `eth_getLogs` over block ranges that adapt to what the provider takes.

Guarantees: a range refusal (the answer names a range or result limit) halves the range until the provider
answers; the range doubles again after each answered call, up to `MAX_LOG_RANGE` (and up to half the smallest refused
range for `RANGE_LIMIT_TTL_S` after a refusal). A rate limit is not a range refusal: the same call is retried after
`Retry-After` or a back-off (tenacity), up to `RATE_LIMIT_ATTEMPTS`. An answer with a log outside the asked range is
refused (ValueError), never believed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from node.chain.heads import (
    MAX_LOG_RANGE,
    RANGE_LIMIT_TTL_S,
    RATE_LIMIT_ATTEMPTS,
    Refusal,
    check_logs,
    grown_range,
    log_refusal,
    rate_limit_wait,
)
from node.chain.heads import Call as Call  # re-exported: the listener's calls have this type
from node.observability.conditions import CONDITIONS

log = logging.getLogger("node.chain.listener")


class LogReader:
    """`eth_getLogs` for the coordinator's filter over [from, to], in ranges of `size` blocks (1 to
    `MAX_LOG_RANGE`), which shrink on a provider's range refusal and grow back after answers."""

    def __init__(self, filter_: Callable[[int, int], dict[str, Any]]) -> None:
        self._filter = filter_
        #: Blocks in the next call.
        self.size = MAX_LOG_RANGE
        #: Ranges stay at most this big until `_range_limit_until` (monotonic), after a range refusal.
        self._range_limit = MAX_LOG_RANGE
        self._range_limit_until = 0.0

    async def read(self, call: Call, from_block: int, to_block: int) -> list[Any]:
        """`eth_getLogs` over [from, to]: retried after a back-off while rate limited, the range halved while the
        provider refuses it; raises what is neither (and a rate limit that outlasts `RATE_LIMIT_ATTEMPTS`)."""
        try:
            logs = await self._call(call, from_block, to_block)
        except Exception as exc:
            if log_refusal(exc) is not Refusal.RANGE or from_block == to_block:
                raise
            size = to_block - from_block + 1
            self.size = max(1, size // 2)
            self._range_limit = min(self._range_limit, self.size)
            self._range_limit_until = time.monotonic() + RANGE_LIMIT_TTL_S
            log.info("provider refused logs %d-%d (%s); splitting to %d blocks", from_block, to_block, exc, self.size)
            middle = from_block + self.size - 1
            return await self.read(call, from_block, middle) + await self.read(call, middle + 1, to_block)
        check_logs(logs, from_block, to_block)
        if time.monotonic() >= self._range_limit_until:
            self._range_limit = MAX_LOG_RANGE
        self.size = grown_range(self.size, self._range_limit)
        return logs

    async def _call(self, call: Call, from_block: int, to_block: int) -> list[Any]:
        """One `eth_getLogs`, retried (tenacity) while the endpoint answers with a rate limit."""
        subject = "eth_getLogs"
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda e: log_refusal(e) is Refusal.RATE_LIMITED),
            wait=rate_limit_wait,
            stop=stop_after_attempt(RATE_LIMIT_ATTEMPTS),
            before_sleep=lambda state: CONDITIONS.set(
                subject,
                f"rate limited by the RPC ({state.outcome.exception() if state.outcome else ''}); backing off",
                blocks_ready=False,
            ),
            reraise=True,
        ):
            with attempt:
                result = await call("eth_getLogs", [self._filter(from_block, to_block)])
        if CONDITIONS.get(subject) is not None:
            CONDITIONS.set(subject, None)
        if not isinstance(result, list):
            raise ConnectionError(f"eth_getLogs answered {str(result)[:80]!r}, not a list")
        return result
