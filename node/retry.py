"""The node's one back-off policy, from tenacity: capped exponential waits with jitter.

Loops that retry an outside answer (an RPC call, a send, a container call) either run under a tenacity `AsyncRetrying`
or, where the retry is a job waiting in a queue rather than a call in a loop, ask `backoff_s(attempt, …)` how long
to wait; both use the same tenacity wait strategy, so every retry in the node backs off the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import logging
import time
from collections.abc import Awaitable, Callable

import tenacity


@functools.cache
def _wait(base_s: float, max_s: float) -> tenacity.wait.wait_base:
    # Jitter up to a quarter of the base keeps retries of many jobs from arriving in lockstep.
    return tenacity.wait_exponential_jitter(multiplier=base_s, max=max_s, jitter=base_s / 4)


class _Attempt(tenacity.RetryCallState):
    """The only part of tenacity's retry state a wait strategy reads: the attempt's number."""

    def __init__(self, attempt: int) -> None:
        self.attempt_number = attempt


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds to wait before retry number `attempt` (1-based): `base_s` * 2^(attempt-1) plus up to `base_s`/4 of
    jitter, never more than `max_s`."""
    return float(_wait(base_s, max_s)(_Attempt(max(1, attempt))))


def policy(base_s: float, max_s: float) -> tenacity.wait.wait_base:
    """The wait strategy itself, for an `AsyncRetrying(wait=…)`."""
    return _wait(base_s, max_s)


#: Longest `Retry-After` the node honours, in seconds (an endpoint asking for an hour gets a minute).
RETRY_AFTER_MAX_S = 60.0


def retry_after_s(header: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from an HTTP `Retry-After` value (delay-seconds or an HTTP-date; `now` in unix seconds,
    default the machine's clock), capped at `RETRY_AFTER_MAX_S`; None when absent or unreadable."""
    if header is None:
        return None
    value = header.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():  # str.isdigit() also takes "²" and other digits int() refuses
        seconds = float(int(value[:6]))  # a 300-digit number is just "long"
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # HTTP-dates are GMT
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(RETRY_AFTER_MAX_S, max(0.0, seconds))


async def wait_set(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Waits until `event` is set or `timeout_s` seconds passed (None: no limit); returns whether it is set.

    Use this, never `asyncio.wait_for(event.wait(), t)`: on Python 3.11 `wait_for` swallows a cancellation that
    arrives as the event is set (CPython gh-86296), and a task cancelled at shutdown then runs on for ever (found by
    the benchmark's node stops: 1 in 3 hung at SIGTERM). `asyncio.timeout` passes every cancellation through.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


async def every(period_s: float, step: Callable[[], Awaitable[object]], what: str, log: logging.Logger) -> None:
    """Runs `step` every `period_s` seconds until cancelled: a step that fails for any reason (an RPC outage, any
    answer) is logged as "could not `what`" and tried again at the next period; it never ends the loop."""
    while True:
        await asyncio.sleep(period_s)  # a period, not a wait for a condition
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not %s: %s", what, exc)
