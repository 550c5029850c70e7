"""The send path against answers nobody planned for: unknown JSON-RPC errors, rate limits with text bodies, an output
too large for the RPC, a batch over the block gas limit, a key without funds, a chain clock behind the machine's.

Each test asserts what an operator checks: the process is alive, everything deliverable is delivered exactly once
afterwards, and during the fault the node's calls and sends stay under a ceiling (no hot loop).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiohttp import web

from bench.rpcproxy import proxy_in_thread
from node.chain.contracts import model_id
from node.devnet import DEFAULT_FEE_WEI, free_port, wait_until
from tests.faults.conftest import MODEL, FaultRig, readyz

pytestmark = pytest.mark.faults


def rpc(rig: FaultRig, method: str, *params: Any) -> Any:
    response = rig.dev.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response.get("result")


def max_per_window(times: list[float], window_s: float = 1.0) -> int:
    """The most calls in any `window_s` of `times` (monotonic seconds)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def is_simulation(call: dict[str, Any]) -> bool:
    """The node's delivery simulation: an `eth_call` from its key (its other eth_calls have no `from`)."""
    params = call.get("params") or [{}]
    return call.get("method") == "eth_call" and isinstance(params[0], dict) and "from" in params[0]


def failure_reports(rig: FaultRig) -> dict[int, list[str]]:
    """FailureReported(requestId, node, reason) events by request id."""
    coordinator = rig.dev.deployment.coordinator  # type: ignore[union-attr]
    found: dict[int, list[str]] = {}
    for event in coordinator.events.FailureReported().get_logs(from_block=0):
        found.setdefault(int(event["args"]["requestId"]), []).append(str(event["args"]["reason"]))
    return found


@contextmanager
def app_in_thread(app: web.Application) -> Iterator[str]:
    """Serves `app` on 127.0.0.1 from an event loop of its own thread; yields its URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-app", daemon=True)
    thread.start()
    port = free_port()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def sizing_container() -> web.Application:
    """Echoes its input, except `big-<n>`, answered with an output of n bytes (an Infera-style ABI output)."""

    async def service_output(request: web.Request) -> web.Response:
        data = bytes.fromhex((await request.json())["data"])
        text = data.decode(errors="replace")
        output = bytes(int(text[4:])) if text.startswith("big-") else data
        return web.json_response({"raw_output": output.hex(), "processed_output": None, "abi_output": True})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/service_output", service_output)
    app.router.add_get("/health", health)
    return app


# ------------------------------------------------------------------------------------------------------- kind A


def test_unknown_answers_to_the_simulation_are_retried_with_backoff(rig: FaultRig) -> None:
    """`header not found`, a 429 with a text body, an `Invalid request`, an unknown code, a revert without data and
    a body that is not JSON, each answered to the delivery simulation: before, the first of them ended the process
    with an ExceptionGroup. Now each is retried after a back-off and the request is delivered once."""
    dev = rig.dev
    bad: list[Any] = [
        {"code": -32000, "message": "header not found"},
        ("429", "Too Many Requests"),
        {"code": -32600, "message": "Invalid request"},
        {"code": -32099, "message": "something nobody has seen before", "data": {"x": [1, 2]}},
        {"code": 3, "message": "execution reverted"},
        ("200", "<html>gateway says hi</html>"),
    ]
    answers = itertools.cycle(bad)
    faulted: list[float] = []
    simulations: list[float] = []  # the deliveries' simulations only (the node's other eth_calls read its standing)

    def fault(call: dict[str, Any]) -> web.Response | None:
        if is_simulation(call):
            simulations.append(time.monotonic())
        if not is_simulation(call) or len(faulted) >= 12:
            return None
        faulted.append(time.monotonic())
        answer = next(answers)
        if isinstance(answer, tuple):
            return web.Response(status=int(answer[0]), text=answer[1], content_type="text/plain")
        return web.json_response({"jsonrpc": "2.0", "id": call.get("id"), "error": answer})

    with proxy_in_thread(dev.rpc_port) as proxy:
        proxy.fault = fault
        rig.config = dev.write_node_config(
            {MODEL: {"url": rig.container_url, "timeout_s": 10}}, rpc_url=proxy.http_url, ws_url=proxy.ws_url
        )
        node = rig.start_node()
        ids = dev.request_many(MODEL, [f"unknown-{i}".encode() for i in range(3)])
        rig.wait_fulfilled(ids, timeout_s=120)
        node.check_alive()

    assert len(faulted) == 12
    assert rig.fulfillments() == dict.fromkeys(ids, 1)
    assert failure_reports(rig) == {}, "a transient answer must not turn into a failure report"
    busiest = max_per_window(simulations)
    assert busiest <= 12, f"{busiest} simulations in one second: the retries do not back off"
    log = (dev.workdir / "node.log").read_text()
    assert "Traceback" not in log
    print(f"12 unknown answers to the simulation: 3 delivered once, at most {busiest} eth_call/s")


def test_an_output_too_large_for_the_rpc_ends_in_a_failure_report_and_the_node_lives(rig: FaultRig) -> None:
    """A consumer's request whose output is 5 MiB: before, the RPC refused the simulation and the node exited, and
    every restart died again on the same stored job. Now the output is reported as a failure (the coordinator's
    maxOutputBytes is read at start) and requests beside it are delivered, before and after a restart."""
    dev = rig.dev
    with app_in_thread(sizing_container()) as url:
        rig.config = dev.write_node_config({MODEL: {"url": url, "timeout_s": 30}}, rpc_url=rig.proxy.url)
        node = rig.start_node()
        (big,) = dev.request_many(MODEL, [f"big-{5 * 1024 * 1024}".encode()])
        small = dev.request_many(MODEL, [b"small-1", b"small-2"])
        rig.wait_fulfilled(small)
        wait_until(lambda: big in failure_reports(rig), timeout_s=60, what="the failure report of the big output")
        node.check_alive()
        (reason,) = failure_reports(rig)[big]
        assert "maxOutputBytes" in reason, reason
        assert len(reason.encode()) <= 256, reason

        rig.kill_node()
        rig.start_node()
        after = dev.request_many(MODEL, [b"after-restart"])
        rig.wait_fulfilled(after)
        rig.node.check_alive()  # type: ignore[union-attr]

    assert rig.fulfillments() == dict.fromkeys([*small, *after], 1)
    assert len(failure_reports(rig)[big]) == 1


def test_a_batch_over_the_block_gas_limit_is_split_not_resent(rig: FaultRig) -> None:
    """20 computed jobs with a 2,000,000 callback gas limit each: before, one deliverBatch of ~42.5 M gas (over
    anvil's 30 M block gas limit) was re-sent 27 times a second and nothing was delivered. Now batches are sized
    below the block's gas limit."""
    dev = rig.dev
    with proxy_in_thread(dev.rpc_port) as proxy:
        rig.config = dev.write_node_config(
            {MODEL: {"url": rig.container_url, "timeout_s": 60, "max_concurrency": 32, "max_callback_gas": 2_000_000}},
            rpc_url=proxy.http_url,
            ws_url=proxy.ws_url,
        )
        rig.control("hold")  # every computation waits, so that all 20 outputs come back at once
        ids = dev.request_many(MODEL, [f"heavy-{i}".encode() for i in range(20)], callback_gas_limit=2_000_000)
        node = rig.start_node()
        rig.wait_states("all 20 jobs in the container", running=20)
        rig.control("release")
        released = time.monotonic()
        rig.wait_fulfilled(ids, timeout_s=120)
        node.check_alive()
        sends = [t for m in ("eth_sendRawTransactionSync", "eth_sendRawTransaction") for t in proxy.times.get(m, [])]
        sends = [t for t in sends if t >= released]

    txs = rig.node_txs(dev.node_account.address)
    block_gas_limit = int(dev.w3.eth.get_block("latest")["gasLimit"])
    assert rig.fulfillments() == dict.fromkeys(ids, 1)
    assert all(tx["status"] == 1 and tx["gas"] <= block_gas_limit for tx in txs), txs
    assert len(sends) <= len(txs) + 2, f"{len(sends)} sends for {len(txs)} transactions"
    print(f"20 heavy jobs: {len(txs)} transactions, {len(sends)} sends, each under {block_gas_limit} gas")


def test_a_key_without_funds_pauses_says_why_and_recovers(rig: FaultRig) -> None:
    """The node's key runs dry: sends are refused for insufficient funds. The key pauses with a growing back-off
    (no hot loop), `/readyz` names the key and the reason, and once it is funded the jobs are delivered once."""
    dev = rig.dev
    address = dev.node_account.address
    with proxy_in_thread(dev.rpc_port) as proxy:
        rig.config = dev.write_node_config(
            {MODEL: {"url": rig.container_url, "timeout_s": 10}}, rpc_url=proxy.http_url, ws_url=proxy.ws_url
        )
        rig.start_node()
        warm = dev.request_many(MODEL, [b"funded"])
        rig.wait_fulfilled(warm)
        funded = rpc(rig, "eth_getBalance", address, "latest")
        rpc(rig, "anvil_setBalance", address, hex(10**9))  # a gwei: no delivery fits
        proxy.times.clear()
        dry_at = time.monotonic()
        ids = dev.request_many(MODEL, [f"dry-{i}".encode() for i in range(3)])
        said: dict[str, Any] = {}

        def key_named() -> bool:
            code, body = readyz(dev.api_port)
            said.update(body)
            return code == 503 and any(address in p and "cannot send" in p for p in body["problems"])

        wait_until(key_named, timeout_s=60, what="/readyz to name the key without funds")
        with urllib.request.urlopen(f"http://127.0.0.1:{dev.api_port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert f'infera_condition{{subject="key {address}"}} 1.0' in metrics
        assert 'infera_outside_answers_total{action="key_blocked",source="send"}' in metrics
        wait_until(
            lambda: time.monotonic() - dry_at > 10 or None, timeout_s=30, what="ten seconds of the fault", interval_s=1
        )
        sends = [t for m in ("eth_sendRawTransactionSync", "eth_sendRawTransaction") for t in proxy.times.get(m, [])]
        rpc(rig, "anvil_setBalance", address, funded)
        rig.wait_fulfilled(ids, timeout_s=120)
        wait_until(lambda: readyz(dev.api_port)[0] == 200, timeout_s=60, what="the node to be ready again")
        rig.node.check_alive()  # type: ignore[union-attr]

    assert rig.fulfillments() == dict.fromkeys([*warm, *ids], 1)
    assert len(sends) <= 10, f"{len(sends)} sends in 10 s from a key without funds: no back-off"
    print(f"key without funds: {len(sends)} sends in 10 s; /readyz said {said['problems']}")


# ------------------------------------------------------------------------------------------------------- kind C


def test_deadlines_are_judged_by_the_chains_clock(rig: FaultRig) -> None:
    """The chain's clock 120 s behind the node's machine, a request with 60 s of chain time left: before, the node
    skipped it as "deadline passed" (it compared with its own clock). Now it is delivered."""
    dev = rig.dev
    rpc(rig, "evm_setTime", int(time.time()) - 120)
    rpc(rig, "evm_mine")
    rig.configure()
    rig.start_node()
    chain_now = int(dev.w3.eth.get_block("latest")["timestamp"])
    assert time.time() - chain_now > 100
    coordinator = dev.deployment.coordinator  # type: ignore[union-attr]
    params = (model_id(MODEL), 100_000, 1, chain_now + 60, "0x" + "00" * 20, DEFAULT_FEE_WEI)
    fn = coordinator.get_function_by_signature(
        "requestInference((bytes32,uint32,uint16,uint64,address,uint256),bytes)"
    )(params, b"chain-time")
    nonce = dev.w3.eth.get_transaction_count(dev.user.address, "pending")
    tx: Any = fn.build_transaction({"from": dev.user.address, "value": DEFAULT_FEE_WEI, "gas": 400_000, "nonce": nonce})
    tx_hash = dev.w3.eth.send_raw_transaction(dev.user.sign_transaction(tx).raw_transaction)
    rid = dev.request_id_of(dev.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60))
    rig.wait_fulfilled([rid], timeout_s=60)
    assert rig.fulfillments()[rid] == 1
    assert "deadline passed" not in (dev.workdir / "node.log").read_text()
