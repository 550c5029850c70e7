"""The pure logic behind "no outside answer stops or spins the node": the taxonomy of RPC answers, the per-key send
ceiling, what a failure report carries, the gas a batch item is bounded by, the chain's clock and the conditions'
log-once-per-change."""

from __future__ import annotations

import asyncio
import logging
import random

import aiohttp
import pytest
from web3.exceptions import ContractLogicError

from node.chain import delivery
from node.chain.broadcast import SendCeiling
from node.chain.clock import ChainClock
from node.chain.contracts import InferenceRequest
from node.chain.rpc import EndpointError, RpcError, classify, classify_answer
from node.errors import Action, ContainerRejected, RpcUnavailable
from node.jobs.store import Job
from node.observability.conditions import Conditions
from node.retry import backoff_s


@pytest.mark.parametrize(
    ("code", "message", "action"),
    [
        (3, "execution reverted", Action.REFUSED),
        (-32000, "execution reverted: custom error 0x12345678", Action.REFUSED),
        (-32005, "daily request count exceeded, request rate limited", Action.RETRY),
        (429, "Too Many Requests", Action.RETRY),
        (-32000, "header not found", Action.RETRY),
        (-32000, "missing trie node 0xabc (path )", Action.RETRY),
        (-32000, "replacement transaction underpriced", Action.RETRY),
        (-32000, "insufficient funds for gas * price + value", Action.KEY_BLOCKED),
        (-32003, "Insufficient funds for gas * price + value", Action.KEY_BLOCKED),
        (-32000, "exceeds block gas limit", Action.REFUSED),
        (-32000, "intrinsic gas too low", Action.REFUSED),
        (-32003, "intrinsic gas too high -- tx.gas_limit > env.block.gas_limit", Action.REFUSED),
        (-32000, "oversized data", Action.REFUSED),
        (-32600, "Invalid request", Action.REFUSED),
        (-32602, "invalid argument 0: hex string has odd length", Action.REFUSED),
        (-32603, "", Action.RETRY),
        (-32601, "the method eth_sendRawTransactionSync does not exist/is not available", Action.UNHEALTHY),
        (12345, "something nobody has seen", Action.UNKNOWN),
        (0, "", Action.UNKNOWN),
    ],
)
def test_json_rpc_error_answers_are_classified(code: int, message: str, action: Action) -> None:
    assert classify_answer(code, message) is action
    assert classify(RpcError("eth_call", code, message)) is action


def test_every_exception_has_an_action_and_none_is_fatal() -> None:
    assert classify(RpcUnavailable("no endpoint answered")) is Action.UNHEALTHY
    assert classify(EndpointError("HTTP 502", status=502)) is Action.UNHEALTHY
    assert classify(aiohttp.ClientPayloadError("truncated")) is Action.UNHEALTHY
    assert classify(TimeoutError()) is Action.UNHEALTHY
    assert classify(ContainerRejected("bad input", status=400)) is Action.REFUSED
    assert classify(ContractLogicError("execution reverted")) is Action.REFUSED
    assert classify(KeyError("status")) is Action.UNKNOWN
    assert classify(TypeError("'int' object is not iterable")) is Action.UNKNOWN


def test_classification_never_raises_on_random_answers() -> None:
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz -:0123456789\u2603\x00"
    for _ in range(2_000):
        code = rng.choice([rng.randrange(-33000, 33000), 0, 3, 429, -(2**63), 2**63])
        message = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        assert isinstance(classify_answer(code, message), Action)


def _job(callback_gas: int, *, output: bytes | None = None, failure: str | None = None) -> Job:
    request = InferenceRequest(
        request_id=1,
        model_id=b"\x00" * 32,
        consumer="0x" + "11" * 20,  # type: ignore[arg-type]
        input=b"x",
        token="0x" + "00" * 20,  # type: ignore[arg-type]
        fee_per_node_wei=1,
        callback_gas_limit=callback_gas,
        redundancy=1,
        deadline=2**40,
        verifier="0x" + "00" * 20,  # type: ignore[arg-type]
        block_number=1,
        block_hash="0x" + "00" * 32,
        tx_hash="0x" + "00" * 32,
        log_index=0,
    )
    return Job(request, "m", output=output, failure=failure)


def test_a_failure_report_fits_whatever_the_reason() -> None:
    for reason in ["x" * 10_000, "\u2603" * 5_000, "ok", "", "a\x00b" * 300, "é" * 129]:
        sent = delivery.failure_reason(reason)
        assert len(sent) <= delivery.FAILURE_REASON_MAX
        sent.decode("utf-8")  # cut on a character boundary: still valid UTF-8
        assert reason.encode().startswith(sent)


def test_an_error_callback_is_bounded_by_the_coordinators_cap_not_the_requests_limit() -> None:
    heavy = 2_000_000
    delivered = delivery.item_gas(_job(heavy, output=b"\x00" * 64))
    reported = delivery.item_gas(_job(heavy, failure="no answer"))
    assert delivered > heavy
    assert reported < delivery.BATCH_ITEM_GAS + delivery.ERROR_CALLBACK_GAS * 64 // 63 + 40 * 64
    assert delivery.gas_limit([_job(heavy, output=b"")] * 3) == delivery.BATCH_BASE_GAS + 3 * delivery.item_gas(
        _job(heavy, output=b"")
    )


def test_backoff_grows_capped_with_jitter() -> None:
    waits = [backoff_s(n, 0.25, 10.0) for n in range(1, 12)]
    assert 0.25 <= waits[0] <= 0.25 * 1.25
    assert all(w <= 10.0 for w in waits)
    assert waits[-1] == 10.0
    assert waits[4] > waits[1]


async def test_the_send_ceiling_holds_a_key_to_its_per_block_budget() -> None:
    head = [100]
    ceiling = SendCeiling(per_s=1_000, per_block=3, head=lambda: head[0])
    for _ in range(3):
        await asyncio.wait_for(ceiling.wait("0xkey"), 1)
    fourth = asyncio.ensure_future(ceiling.wait("0xkey"))
    done, _ = await asyncio.wait({fourth}, timeout=0.3)
    assert not done, "a fourth send in the same block went out"
    await asyncio.wait_for(ceiling.wait("0xother"), 1)  # another key has its own budget
    head[0] = 101
    await asyncio.wait_for(fourth, 1)
    assert ceiling.waits >= 1


async def test_the_send_ceiling_holds_a_key_to_its_per_second_budget() -> None:
    ceiling = SendCeiling(per_s=2, per_block=1_000, head=lambda: 0)
    await ceiling.wait("0xkey")
    await ceiling.wait("0xkey")
    third = asyncio.ensure_future(ceiling.wait("0xkey"))
    done, _ = await asyncio.wait({third}, timeout=0.3)
    assert not done, "a third send within one second went out"
    await asyncio.wait_for(third, 2)


def test_the_chain_clock_follows_the_newest_head_not_the_machine() -> None:
    clock = ChainClock()
    assert not clock.synced
    clock.on_head(1_000, 10)
    assert clock.synced
    assert 1_000 <= clock.now() < 1_005
    assert clock.skew_s() > 1_000_000  # this machine's clock is decades past 1970 + 1000 s
    clock.on_head(900, 11)  # a devnet warped back: the newest block's word counts
    assert 900 <= clock.now() < 905
    clock.on_head(10**9, 12)  # a wrong head ...
    clock.on_head(910, 13)  # ... is corrected by the next one
    assert 910 <= clock.now() < 915


def test_a_condition_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    conditions = Conditions()
    with caplog.at_level(logging.INFO, logger="node.observability.conditions"):
        for _ in range(50):
            conditions.set("key 0xabc", "cannot send: insufficient funds")
        conditions.set("ws ws://rpc", "stale", blocks_ready=False)
        assert conditions.problems() == ["key 0xabc: cannot send: insufficient funds", "ws ws://rpc: stale"]
        assert conditions.problems(blocking_only=True) == ["key 0xabc: cannot send: insufficient funds"]
        conditions.set("key 0xabc", None)
        conditions.set("key 0xabc", None)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "key 0xabc: cannot send: insufficient funds",
        "ws ws://rpc: stale",
        "key 0xabc: recovered (was: cannot send: insufficient funds)",
    ]
    conditions.count("rpc", Action.UNKNOWN)
    conditions.count("rpc", Action.UNKNOWN)
    assert conditions.answers[("rpc", "unknown")] == 2
