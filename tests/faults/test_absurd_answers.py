"""Answers of the right shape with absurd contents, found by attacking the node the way a hostile consumer or a
broken provider would: a consumer callback that forges the coordinator's logs, RPC numbers no chain has (a balance
or gas limit of 300 hex digits, a log from block 2^256-1, a head a million blocks or 30 years ahead, a block gas
limit of 21,000), and a container's `Retry-After: ²` or an error text with a lone surrogate.

Each must leave the node running, deliver every request exactly once, and neither skip requests nor turn good
outputs into failure reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bench.rpcproxy import proxy_in_thread
from node.chain.contracts import model_id
from node.devnet import DEFAULT_FEE_WEI, wait_until
from tests.faults.conftest import MODEL, FaultRig, readyz
from tests.faults.test_send_path import app_in_thread, failure_reports

pytestmark = pytest.mark.faults


def test_a_callback_that_forges_the_coordinators_logs_cannot_stall_the_node(rig: FaultRig) -> None:
    """A consumer whose callback emits a `DeliverySkipped`-shaped log naming the node, with no data: before, reading
    the receipt raised, the delivery never settled and held one of the key's `max_pending_txs` slots for ever (two
    such requests stopped a node with `max_pending_txs = 2`). Now only the coordinator's own logs are read."""
    dev = rig.dev
    coordinator = dev.deployment.coordinator  # type: ignore[union-attr]
    forger = dev._deploy("ForgingConsumer", coordinator.address)
    rig.configure(max_pending_txs=2)
    rig.start_node()
    forged = []
    for i in range(2):
        fn = forger.functions.request(model_id(MODEL), f"forged-{i}".encode(), 100_000)
        tx: Any = fn.build_transaction(
            {
                "from": dev.user.address,
                "value": DEFAULT_FEE_WEI,
                "gas": 500_000,
                "nonce": dev.w3.eth.get_transaction_count(dev.user.address, "pending"),
            }
        )
        tx_hash = dev.w3.eth.send_raw_transaction(dev.user.sign_transaction(tx).raw_transaction)
        forged.append(dev.request_id_of(dev.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)))
    good = dev.request_many(MODEL, [f"after-the-forger-{i}".encode() for i in range(3)])
    rig.wait_fulfilled([*forged, *good], timeout_s=60)
    rig.wait_states("every job settled as delivered", confirmed=5)
    assert rig.fulfillments() == dict.fromkeys([*forged, *good], 1)
    assert not rig.db("SELECT nonce FROM txs WHERE state IN ('pending', 'mined')")


def mutating(anvil_port: int, tricks: list[tuple[Callable[[dict[str, Any]], bool], Callable[[Any], Any]]]) -> Any:
    """A proxy fault: each (matches, mutate) trick applies once, in order, to the next call it matches: the call is
    forwarded to anvil and the `result` of its answer replaced by `mutate(result)`."""
    pending = list(tricks)
    applied: list[int] = []

    async def fault(call: dict[str, Any]) -> web.Response | None:
        if not pending or not pending[0][0](call):
            return None
        _, mutate = pending.pop(0)
        async with aiohttp.ClientSession() as session, session.post(f"http://127.0.0.1:{anvil_port}", json=call) as r:
            answer = await r.json()
        if answer.get("result") is not None:
            answer["result"] = mutate(answer["result"])
        applied.append(1)
        return web.Response(text=json.dumps(answer), content_type="application/json")

    fault.applied = applied  # type: ignore[attr-defined]
    fault.pending = pending  # type: ignore[attr-defined]
    return fault


def is_latest(call: dict[str, Any]) -> bool:
    return call.get("method") == "eth_getBlockByNumber" and (call.get("params") or [None])[0] == "latest"


def with_fields(**fields: str) -> Callable[[Any], Any]:
    return lambda block: {**block, **fields}


def test_absurd_numbers_from_the_rpc_neither_stop_nor_blind_the_node(rig: FaultRig) -> None:
    """Before, each of these ended the process (a balance or a gas limit no float holds, a log from a block past
    SQLite's integers), made the listener deaf for good while `/readyz` said 200 (a head a million blocks ahead moved
    the cursor past blocks that did not exist yet), or threw good outputs away (a head with a 21,000 gas limit)."""
    dev = rig.dev
    huge = "0x" + "f" * 300

    def far_ahead(block: Any) -> Any:
        return {**block, "number": hex(int(block["number"], 16) + 1_000_000), "hash": "0x" + "ab" * 32}

    def far_future(block: Any) -> Any:
        return {**block, "timestamp": hex(int(block["timestamp"], 16) + 10**9), "hash": "0x" + "cd" * 32}

    def log_from_nowhere(logs: Any) -> Any:
        return [{**entry, "blockNumber": "0x" + "f" * 64} for entry in logs]

    tricks: list[tuple[Callable[[dict[str, Any]], bool], Callable[[Any], Any]]] = [
        (lambda c: c.get("method") == "eth_getBalance", lambda _: huge),
        (is_latest, with_fields(gasLimit=huge)),
        (is_latest, far_ahead),
        (is_latest, far_ahead),
        (is_latest, far_future),
        (is_latest, with_fields(gasLimit="0x5208")),
        (is_latest, with_fields(gasLimit="0x5208")),
    ]
    with proxy_in_thread(dev.rpc_port) as proxy:
        fault = mutating(dev.rpc_port, tricks)
        proxy.fault = fault
        rig.config = dev.write_node_config(
            {MODEL: {"url": rig.container_url, "timeout_s": 10}}, rpc_url=proxy.http_url, ws_url="", poll_interval_s=0.2
        )
        node = rig.node = dev.start_node(rig.config)
        ids: list[int] = []
        round_ = 0
        while fault.pending:  # requests go on while the tricks play out
            ids += dev.request_many(MODEL, [f"absurd-{round_}-{i}".encode() for i in range(2)])
            round_ += 1
            wait_until(
                lambda n=len(fault.applied): len(fault.applied) > n or not fault.pending or None,
                timeout_s=30,
                what="the next trick",
                alive=node.check_alive,
            )
        fault.pending.append((lambda c: c.get("method") == "eth_getLogs", log_from_nowhere))
        ids += dev.request_many(MODEL, [b"logged-from-nowhere"])
        wait_until(lambda: not fault.pending or None, timeout_s=30, what="the absurd log", alive=node.check_alive)
        later = dev.request_many(MODEL, [f"after-{i}".encode() for i in range(3)])
        rig.wait_fulfilled([*ids, *later], timeout_s=90)
        wait_until(lambda: readyz(dev.api_port)[0] == 200, timeout_s=60, what="the node ready", alive=node.check_alive)
        node.check_alive()

    assert rig.fulfillments() == dict.fromkeys([*ids, *later], 1)
    assert failure_reports(rig) == {}, "a wrong head turned good outputs into failure reports"
    _, status = readyz(dev.api_port)
    assert status["cursor"] <= dev.w3.eth.block_number + 1, status


def odd_container() -> web.Application:
    """Echoes, except: every input's first call is a 429 with `Retry-After: ²` (a digit `int()` refuses), and
    `bad-*` inputs are then refused with an error text holding a lone surrogate."""
    seen: set[str] = set()

    async def service_output(request: web.Request) -> web.Response:
        data = (await request.json())["data"]
        if data not in seen:
            seen.add(data)
            return web.Response(status=429, text="slow down", headers={"Retry-After": "\u00b2"})
        if bytes.fromhex(data).startswith(b"bad-"):
            return web.Response(
                status=400, text='{"error": "cannot read \\ud800 this"}', content_type="application/json"
            )
        return web.json_response({"raw_output": data, "processed_output": None, "abi_output": True})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/service_output", service_output)
    app.router.add_get("/health", health)
    return app


def test_odd_bytes_from_a_container_fail_only_their_own_request(rig: FaultRig) -> None:
    """Before, `Retry-After: ²` failed every call of its round trip (and the scheduler failed those jobs without a
    report), and an error text with a lone surrogate left its job stuck `running` (it could not be stored)."""
    dev = rig.dev
    with app_in_thread(odd_container()) as url:
        rig.config = dev.write_node_config(
            {MODEL: {"url": url, "timeout_s": 10, "max_attempts": 3, "retry_backoff_s": 0.05}}, rpc_url=rig.proxy.url
        )
        node = rig.start_node()
        good = dev.request_many(MODEL, [f"good-{i}".encode() for i in range(4)])
        (bad,) = dev.request_many(MODEL, [b"bad-input"])
        rig.wait_fulfilled(good)
        wait_until(lambda: bad in failure_reports(rig) or None, timeout_s=60, what="the bad input's failure report")
        node.check_alive()

    assert rig.fulfillments() == dict.fromkeys(good, 1)
    (reason,) = failure_reports(rig)[bad]
    assert "cannot read" in reason
    assert len(reason.encode()) <= 256
