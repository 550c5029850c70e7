"""The node's one back-off policy, from tenacity: capped exponential waits with jitter.

Loops that retry an outside answer (an RPC call, a send, a container call) either run under a tenacity `AsyncRetrying`
or, where the retry is a job waiting in a queue rather than a call in a loop, ask `backoff_s(attempt, …)` how long
to wait; both use the same tenacity wait strategy, so every retry in the node backs off the same way.
"""

from __future__ import annotations

import functools

import tenacity


@functools.cache
def _wait(base_s: float, max_s: float) -> tenacity.wait.wait_base:
    # Jitter up to a quarter of the base keeps retries of many jobs from arriving in lockstep.
    return tenacity.wait_exponential_jitter(initial=base_s, max=max_s, jitter=base_s / 4)


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
