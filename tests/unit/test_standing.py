"""The node's standing rules (node/chain/standing.py), as pure logic: which typeAndVersion() answers name our
Coordinator, what each key's problem says and whether its amounts can be given back to a command, when the standing
is stale, and when the gas price keeps deliveries from going out."""

from __future__ import annotations

import time

import pytest
from eth_abi.abi import encode
from hypothesis import given
from hypothesis import strategies as st

from node.chain.rpc import RpcError, RpcPool
from node.chain.standing import (
    STALE_AFTER_READS,
    STANDING_REFRESH_S,
    KeyStanding,
    Standing,
    decode_type_and_version,
    eth_exact,
    identify,
    is_revert,
)
from node.commands.chain_ops import parse_amount

ADDRESS = "0x" + "ab" * 20
KEY = "0x" + "cd" * 20
CODE = b"\x60\x80"


@pytest.mark.parametrize(
    ("code", "answer", "says"),
    [
        (b"", None, "holds no contract"),
        (CODE, None, "does not answer typeAndVersion()"),
        (CODE, "InferaNodeRegistry 0.1.0", "is the NodeRegistry, not the Coordinator"),
        (CODE, "InferaSubscriptionManager 0.1.0", "is the SubscriptionManager"),
        (CODE, "Coordinator 0.1.0", 'typeAndVersion() is "Coordinator 0.1.0"'),
        (CODE, "InferaCoordinator", 'typeAndVersion() is "InferaCoordinator"'),  # no version: not ours
        (CODE, "InferaCoordinator 0.9.9\nsecond line", "\\nsecond line"),  # escaped, one line
        (CODE, "InferaCoordinator 1.0.0", "a version this node does not speak"),
    ],
)
def test_identify_names_what_the_address_holds(code: bytes, answer: str | None, says: str) -> None:
    problem = identify(ADDRESS, 1, code, answer)
    assert problem is not None
    assert says in problem
    assert ADDRESS in problem
    assert "\n" not in problem


def test_identify_accepts_our_coordinator() -> None:
    assert identify(ADDRESS, 1, CODE, "InferaCoordinator 0.1.0") is None
    assert identify(ADDRESS, 1, CODE, "InferaCoordinator 0.17.3") is None


@given(st.text(max_size=300))
def test_identify_never_fails_and_says_one_line_whatever_the_contract_answers(answer: str) -> None:
    problem = identify(ADDRESS, 1, CODE, answer)
    if problem is not None:
        assert "\n" not in problem
        assert "\x1b" not in problem
        assert len(problem) < 700


@given(st.binary(max_size=200))
def test_type_and_version_decoding_takes_only_an_abi_string(data: bytes) -> None:
    decoded = decode_type_and_version(data)
    assert decoded is None or isinstance(decoded, str)


def test_type_and_version_decoding_reads_an_abi_string() -> None:
    assert decode_type_and_version(encode(["string"], ["InferaCoordinator 0.1.0"])) == "InferaCoordinator 0.1.0"
    assert decode_type_and_version(b"") is None


def test_only_a_revert_says_what_a_contract_is() -> None:
    assert is_revert(RpcError("eth_call", 3, "execution reverted", "0x"))
    assert is_revert(RpcError("eth_call", -32000, "execution reverted"))
    assert not is_revert(RpcError("eth_call", -32005, "rate limit exceeded"))
    assert not is_revert(RpcError("eth_call", -32603, "internal error"))
    assert not is_revert(ValueError("not hex"))


@given(st.integers(min_value=0, max_value=2**200))
def test_exact_amounts_can_be_given_back_to_a_command(wei: int) -> None:
    assert parse_amount(eth_exact(wei) + "eth") == wei


def key(**fields: object) -> KeyStanding:
    base: dict[str, object] = {
        "address": KEY,
        "registered": True,
        "active": False,
        "stake_wei": 0,
        "unlock_at": 0,
        "balance_wei": 10**18,
        "deliveries_covered": 100,
    }
    return KeyStanding(**{**base, **fields})  # type: ignore[arg-type]


def test_each_key_problem_names_the_command_that_fixes_it() -> None:
    minimum = 1_500_000_123_400_000_000
    assert key(active=True).problem(minimum) is None
    never = key(registered=False).problem(minimum)
    assert never is not None
    assert "not registered" in never
    assert "`infera node register`" in never
    slashed = key(stake_wei=0).problem(minimum)  # registered, slashed to zero: staking again, not registering
    assert slashed is not None
    assert "`infera node stake --amount 1.5000001234eth`" in slashed
    short = key(stake_wei=10**18).problem(minimum)
    assert short is not None
    assert "--amount 0.5000001234eth" in short  # exact, never rounded down
    unbonding = key(stake_wei=minimum, unlock_at=2_000_000_000).problem(minimum)
    assert unbonding is not None
    assert "unbonding" in unbonding
    assert "2033-05-18T03:33:20Z" in unbonding
    extra = key(registered=False, key_env="K4").problem(minimum)
    assert extra is not None
    assert "`infera node register --key-env K4`" in extra


def standing(**fields: object) -> Standing:
    base = Standing(RpcPool(["http://127.0.0.1:1"]), ADDRESS, [KEY], [], 200_000, 10, 100 * 10**9)
    for name, value in fields.items():
        setattr(base, name, value)
    return base


def test_a_standing_not_read_for_three_refreshes_fails_readiness_instead_of_showing_old_figures() -> None:
    now = time.time()
    fresh = standing(as_of=now, min_stake_wei=10**18, gas_price_wei=10**9, keys={KEY: key(active=True)})
    assert fresh.problems(now) == {"stake": [], "balance": []}
    old = now - STALE_AFTER_READS * STANDING_REFRESH_S - 1
    stale = standing(as_of=old, read_error="ValueError: eth_gasPrice answered 'x'", keys={KEY: key(active=True)})
    problems = stale.problems(now)
    assert problems["stake"] == problems["balance"]
    (line,) = problems["stake"]
    assert "not read since" in line
    assert "eth_gasPrice answered" in line
    assert standing(started_at=now).problems(now)["stake"] == [
        "the node's standing (registry, balances) is not read yet"
    ]
    never = standing(started_at=old, read_error="RpcUnavailable: down").problems(now)["stake"]
    assert never == ["the node's standing (registry, balances) is never read: RpcUnavailable: down"]


def test_a_gas_price_above_the_cap_keeps_the_node_from_being_ready() -> None:
    now = time.time()
    above = standing(as_of=now, min_stake_wei=1, gas_price_wei=500 * 10**9, keys={KEY: key(active=True)})
    (line,) = above.problems(now)["balance"]
    assert "500 gwei, above chain.max_fee_per_gas_wei (100 gwei)" in line


def test_a_key_that_pays_for_too_few_deliveries_is_named_with_its_exact_balance() -> None:
    now = time.time()
    dry = standing(
        as_of=now,
        min_stake_wei=1,
        gas_price_wei=10**9,
        keys={KEY: key(active=True, balance_wei=1_234_567_890_123, deliveries_covered=3)},
    )
    (line,) = dry.problems(now)["balance"]
    assert "holds 0.000001234567890123 ETH: 3 deliveries" in line
    assert "api.min_deliveries_covered = 10" in line
