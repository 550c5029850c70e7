"""The listener's pure decisions: log range growth, what a refused eth_getLogs means, the staleness bound."""

from __future__ import annotations

import pytest

from node.chain.heads import (
    MAX_LOG_RANGE,
    STALE_HEAD_BLOCKS,
    BlockTime,
    Refusal,
    grown_range,
    is_stale,
    log_refusal,
)
from node.chain.rpc import RpcError
from node.errors import RpcUnavailable


def test_the_log_range_grows_back_to_the_maximum_after_successes() -> None:
    size, calls = 1, 0
    while size < MAX_LOG_RANGE:
        size, calls = grown_range(size, MAX_LOG_RANGE), calls + 1
    assert size == MAX_LOG_RANGE
    assert calls <= 13  # 1 -> 5,000 by doubling
    assert grown_range(64, 100) == 100  # never past a limit learnt from a range refusal
    assert grown_range(MAX_LOG_RANGE, 10**9) == MAX_LOG_RANGE


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RpcError("eth_getLogs", -32005, "query returned more than 10000 results"), Refusal.RANGE),
        (RpcError("eth_getLogs", -32602, "block range is too wide"), Refusal.RANGE),
        (RpcError("eth_getLogs", -32000, "Log response size exceeded."), Refusal.RANGE),
        (RpcError("eth_getLogs", -32000, "query exceeds max block range 2000"), Refusal.RANGE),
        (RpcError("eth_getLogs", -32000, "something else entirely"), Refusal.RANGE),  # an unknown refusal: split
        (RpcError("eth_getLogs", -32005, "request rate exceeded"), Refusal.RATE_LIMITED),
        (RpcError("eth_getLogs", -32005, "limit exceeded"), Refusal.RATE_LIMITED),
        (RpcError("eth_getLogs", 429, "Too Many Requests"), Refusal.RATE_LIMITED),
        (RpcError("eth_getLogs", -32000, "rate limit reached, retry later"), Refusal.RATE_LIMITED),
        (
            RpcUnavailable("eth_getLogs: no RPC endpoint answered (http://x: EndpointError: HTTP 429 '')"),
            Refusal.RATE_LIMITED,
        ),
        (RpcUnavailable("eth_getLogs: no RPC endpoint answered (http://x: ConnectionRefusedError)"), Refusal.OTHER),
        (ConnectionError("WebSocket closed"), Refusal.OTHER),
        (ValueError("Expecting value: line 1 column 1 (char 0)"), Refusal.OTHER),
    ],
)
def test_a_refused_get_logs_is_classified(exc: BaseException, expected: Refusal) -> None:
    assert log_refusal(exc) is expected


def test_a_status_429_is_a_rate_limit_whatever_the_message() -> None:
    exc = RpcUnavailable("eth_getLogs: no answer")
    exc.status = 429  # type: ignore[attr-defined]
    assert log_refusal(exc) is Refusal.RATE_LIMITED


def test_the_staleness_bound_follows_the_block_time_within_its_floor_and_ceiling() -> None:
    bt = BlockTime(min_s=5.0, max_s=60.0)
    assert bt.stale_after_s() == 60.0  # unknown block time: the ceiling
    for n in range(10):
        bt.observe(100 + n, 1_000 + 2 * n)  # 2 s blocks
    assert bt.estimate_s == pytest.approx(2.0)
    assert bt.stale_after_s() == pytest.approx(STALE_HEAD_BLOCKS * 2.0)
    for n in range(10, 40):
        bt.observe(100 + n, 1_000 + 20 + 12 * (n - 10))  # 12 s blocks: 60 s bound
    assert bt.stale_after_s() == pytest.approx(60.0, rel=0.05)
    fast = BlockTime(min_s=5.0, max_s=60.0)
    for n in range(10):
        fast.observe(n, 1_000)  # many blocks in one second (a devnet burst)
    assert fast.stale_after_s() == 5.0  # the floor
    fast.observe(3, 0)  # out of order: ignored
    assert fast.estimate_s == 0.0


def test_a_silent_socket_is_stale_only_when_the_chain_moved_on() -> None:
    assert is_stale(10, 11)
    assert not is_stale(10, 10)  # an idle chain (automine devnet): no reconnect storm
    assert not is_stale(10, 9)  # a lagging HTTP endpoint says nothing about the socket
    assert not is_stale(10, None)  # nobody answered: cannot tell
    assert is_stale(None, 0)
