"""Subscription intervals by the chain's time: which interval is current, which is due, and the job id of each.

A subscription of `intervals` intervals of `period_s` seconds starts at its creation block's timestamp `start`.
Interval `k` is current while `start + k * period_s <= t < start + (k + 1) * period_s`, by the timestamp `t` of a
block (never this machine's clock), as the SubscriptionManager judges it (`_current`). An interval is live while it is
current, below `active_intervals` and the subscription is not cancelled: exactly when `deliverInterval` takes it. A
cancellation shrinks `active_intervals` to the cancel's `lastInterval + 1` (the intervals it paid for) and, as the
contract has it, ends deliveries at once, the current interval's included (it keeps what was delivered before). Only
the live interval can take a delivery, so an interval that is over is skipped (the consumer reclaims its escrow).

Interval jobs share the jobs table, the state machine and the transaction layer with one-off requests, which know a
job by one integer (its request id). An interval's job id is negative, `interval_job_id(subscription, interval)`, so
it can never equal a request id (those are positive) and `split_job_id` gives the (subscription, interval) back.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The SubscriptionManager's `deliverInterval` takes a uint32 interval.
MAX_INTERVAL = 2**32 - 1
_SHIFT = 32


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as the node keeps it: the `SubscriptionCreated` log's fields, its cancellation, where it was
    seen. Amounts in wei, times in unix seconds (chain time), `period_s` in seconds."""

    subscription_id: int
    model_id: bytes
    consumer: str
    token: str
    fee_per_node_wei: int
    callback_gas_limit: int
    redundancy: int
    period_s: int
    intervals: int
    start: int
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int
    #: `intervals`, or `lastInterval + 1` once cancelled.
    active_intervals: int
    cancelled: bool = False


def current_interval(timestamp: int, start: int, period_s: int) -> int:
    """The interval current at block time `timestamp`: `(timestamp - start) // period_s`, capped at `MAX_INTERVAL`
    as the contract caps it (-1 before `start`, which a block of the chain never is). Raises ValueError for a
    period that is not positive."""
    if period_s <= 0:
        raise ValueError(f"period must be positive, got {period_s}")
    if timestamp < start:
        return -1
    return min((timestamp - start) // period_s, MAX_INTERVAL)


def live_interval(sub: Subscription, timestamp: int) -> int | None:
    """The interval of `sub` that can take a delivery at block time `timestamp` (the current one, if it is below
    `active_intervals` and `sub` is not cancelled), or None (not started, all over, or cancelled)."""
    interval = current_interval(timestamp, sub.start, sub.period_s)
    if sub.cancelled or interval < 0 or interval >= sub.active_intervals:
        return None
    return interval


def interval_end(sub: Subscription, interval: int) -> int:
    """The first block time at which `interval` is over (unix seconds): the job's deadline."""
    return sub.start + (interval + 1) * sub.period_s


def is_over(sub: Subscription, timestamp: int) -> bool:
    """Whether no interval of `sub` can take a delivery at or after block time `timestamp`."""
    return sub.cancelled or current_interval(timestamp, sub.start, sub.period_s) >= sub.active_intervals


def interval_job_id(subscription_id: int, interval: int) -> int:
    """The (negative) job id of an interval; raises ValueError for an interval outside uint32 or a negative id."""
    if not 0 <= interval <= MAX_INTERVAL or subscription_id < 0:
        raise ValueError(f"no job id for subscription {subscription_id} interval {interval}")
    return -((subscription_id << _SHIFT) | interval) - 1


def split_job_id(job_id: int) -> tuple[int, int] | None:
    """(subscription id, interval) of an interval's job id; None for a request id (not negative)."""
    if job_id >= 0:
        return None
    packed = -job_id - 1
    return packed >> _SHIFT, packed & MAX_INTERVAL


def describe_job(job_id: int) -> str:
    """How logs and the CLI name a job: `request 7` or `subscription 3 interval 2`."""
    split = split_job_id(job_id)
    return f"request {job_id}" if split is None else f"subscription {split[0]} interval {split[1]}"
