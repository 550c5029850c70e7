"""RPC answer fuzzing: for a stretch of load, the proxy between the node and anvil answers a random share of every
method's calls with something other than the answer: random JSON-RPC errors (codes, messages, data), random HTTP
statuses (empty, text or HTML bodies, some with `Retry-After`), truncated bodies, results of the wrong type or
nested 200,000 deep, calls carried out but answered with an error, and silent stalls past the node's timeout. The
seed is printed (set `INFERA_FUZZ_SEED` to replay it; `INFERA_FUZZ_SECONDS` for a longer run).

The node reads everything over HTTP here (no WebSocket), so the listener's calls are fuzzed as much as the sender's.
Not fuzzed: an `eth_getLogs` answered `[]`, which is not garbage but a well-formed lie ("no requests in these
blocks"); a node with one RPC provider cannot tell it from the truth (two providers compared, or the WebSocket's live
logs beside the backfill, could). Asserted: the node never exits; its sends stay under the per-key ceiling and its
calls under a bound; and once the fuzzing stops every request is delivered exactly once, with no failure report, no
transaction left unmined and no nonce gap.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bench.rpcproxy import proxy_in_thread
from node.devnet import wait_until
from tests.faults.conftest import MODEL, FaultRig
from tests.faults.test_send_path import failure_reports, max_per_window

pytestmark = pytest.mark.faults

FUZZ_SECONDS = float(os.environ.get("INFERA_FUZZ_SECONDS", "40"))
#: Share of calls answered with a fault while fuzzing.
SHARE = 0.25
#: The per-key send ceiling the node is configured with (chain.max_sends_per_s).
SENDS_PER_S = 20
SEND_METHODS = ("eth_sendRawTransactionSync", "eth_sendRawTransaction")

CODES = [-32000, -32001, -32002, -32005, -32600, -32601, -32602, -32603, -32700, 3, 4, 429, 0, 1, 12345, -1]
MESSAGES = [
    "header not found",
    "missing trie node",
    "rate limit exceeded",
    "Too Many Requests",
    "request timed out",
    "Invalid request",
    "execution reverted",
    "nonce too low",
    "replacement transaction underpriced",
    "already known",
    "internal error",
    "backend unavailable, try again",
    "exceeds block gas limit",
    "method handler crashed",
    "",
    "\u2603 unicode \x00 message",
    "x" * 5000,
]
STATUSES = [400, 401, 403, 404, 405, 408, 413, 429, 500, 502, 503, 504, 520]
BODIES = ["", "Too Many Requests", "<html><body>Bad Gateway</body></html>", '{"message":"forbidden"}', "null"]
KINDS = [
    "json_error",
    "json_error",
    "http_status",
    "truncated",
    "wrong_result",
    "not_json",
    "did_it_then_error",
    "stall",
    "deep_json",
]


class RpcFuzzer:
    """The proxy's `fault` hook: while `on`, answers `SHARE` of the calls with a seeded random fault."""

    def __init__(self, seed: int, upstream_url: str) -> None:
        self.rng = random.Random(seed)
        self.upstream_url = upstream_url
        self.on = False
        #: Set (on the proxy's loop) when the fuzzing stops: stalls end then.
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.injected: collections.Counter[str] = collections.Counter()

    def stop(self) -> None:
        """Stops the fuzzing; stalls under way end at once."""
        self.on = False
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)

    async def _forward(self, call: dict[str, Any]) -> bytes:
        async with aiohttp.ClientSession() as session, session.post(self.upstream_url, json=call) as resp:
            return await resp.read()

    def _error(self, call: dict[str, Any]) -> web.Response:
        error: dict[str, Any] = {"code": self.rng.choice(CODES), "message": self.rng.choice(MESSAGES)}
        if self.rng.random() < 0.3:
            error["data"] = self.rng.choice(["0x", "0xdeadbeef", {"nested": [1, None]}, 7, "plain text"])
        return web.json_response({"jsonrpc": "2.0", "id": call.get("id"), "error": error})

    async def __call__(self, call: dict[str, Any]) -> web.StreamResponse | None:
        if not self.on or self.rng.random() >= SHARE:
            return None
        kind = self.rng.choice(KINDS)
        self.injected[kind] += 1
        if kind == "json_error":
            return self._error(call)
        if kind == "http_status":
            headers = {"Retry-After": str(self.rng.choice([0, 1, 2]))} if self.rng.random() < 0.3 else {}
            return web.Response(
                status=self.rng.choice(STATUSES),
                text=self.rng.choice(BODIES),
                headers=headers,
                content_type="text/plain",
            )
        if kind == "truncated":
            body = await self._forward(call)
            return web.Response(body=body[: max(1, len(body) // 2)], content_type="application/json")
        if kind == "wrong_result":
            choices: list[Any] = [None, 42, "0xzz", [], {"unexpected": True}, "0x", True]
            if call.get("method") == "eth_getLogs":  # [] is a well-formed lie there ("no logs"): see the docstring
                choices.remove([])
            result = self.rng.choice(choices)
            return web.json_response({"jsonrpc": "2.0", "id": call.get("id"), "result": result})
        if kind == "deep_json":  # nested past any recursion limit: must not crash the node's JSON decoder
            depth = self.rng.choice([10_000, 200_000])
            head = f'{{"jsonrpc":"2.0","id":{json.dumps(call.get("id"))},"result":'
            text = head + "[" * depth + "]" * depth + "}"
            return web.Response(text=text, content_type="application/json")
        if kind == "not_json":
            return web.Response(text="<html>502 upstream</html>", content_type="text/html")
        if kind == "did_it_then_error":  # carried out upstream (a send is sent), answered as a failure
            await self._forward(call)
            return self._error(call)
        # A stall past the node's 10 s timeout, cut short when the fuzzing stops (so the proxy can stop).
        loop = asyncio.get_running_loop()
        self._stopped = self._stopped or asyncio.Event()
        self._loop = loop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), self.rng.uniform(10.5, 12.0))
        return web.Response(status=504, text="")


def test_fuzzed_rpc_answers_never_stop_or_spin_the_node(rig: FaultRig) -> None:
    seed = int(os.environ.get("INFERA_FUZZ_SEED", random.randrange(2**32)))
    print(f"\nRPC fuzz seed {seed} (INFERA_FUZZ_SEED={seed} to replay), {FUZZ_SECONDS:.0f} s at {SHARE:.0%}")
    dev = rig.dev
    fuzzer = RpcFuzzer(seed, f"http://127.0.0.1:{dev.rpc_port}")
    with proxy_in_thread(dev.rpc_port) as proxy:
        proxy.fault = fuzzer
        rig.config = dev.write_node_config(
            {MODEL: {"url": rig.container_url, "timeout_s": 10}},
            rpc_url=proxy.http_url,
            ws_url="",
            poll_interval_s=0.25,
            max_sends_per_s=SENDS_PER_S,
        )
        node = rig.node = dev.start_node(rig.config)
        wait_until(
            lambda: "polling" in (dev.workdir / "node.log").read_text() or None,
            timeout_s=60,
            what="the node to poll",
            alive=node.check_alive,
        )
        warm = dev.request_many(MODEL, [b"before the fuzzing"])
        rig.wait_fulfilled(warm)

        proxy.times.clear()
        fuzzer.on = True
        started = time.monotonic()
        ids: list[int] = []
        for second in range(int(FUZZ_SECONDS)):  # steady load, straight to anvil: 3 requests a second
            ids += dev.request_many(MODEL, [f"fuzz-{second}-{i}".encode() for i in range(3)])
            node.check_alive()
            due = started + second + 1
            wait_until(lambda due=due: time.monotonic() >= due or None, timeout_s=5, what="the next second")
        fuzzer.stop()
        fuzzed_for = time.monotonic() - started
        calls_during = {m: [t for t in ts if t <= started + fuzzed_for] for m, ts in proxy.times.items()}

        rig.wait_fulfilled(ids, timeout_s=180)
        address = dev.node_account.address
        wait_until(
            lambda: (
                dev.w3.eth.get_transaction_count(address, "pending") == dev.w3.eth.get_transaction_count(address)
                or None
            ),
            timeout_s=60,
            what="nothing of the node's left unmined",
        )
        wait_until(
            lambda: not rig.db("SELECT 1 FROM txs WHERE state IN ('pending', 'mined')") or None,
            timeout_s=60,
            what="every transaction of the node settled in its store",
        )
        node.check_alive()

    fulfilled = rig.fulfillments()
    assert {i: fulfilled[i] for i in [*warm, *ids]} == dict.fromkeys([*warm, *ids], 1)
    assert failure_reports(rig) == {}, "a fuzzed answer turned a good output into a failure report"
    nonces = sorted(int(tx["nonce"]) for tx in rig.node_txs(dev.node_account.address))
    assert nonces == list(range(nonces[0], nonces[0] + len(nonces))), "a nonce gap"

    sends = [t for m in SEND_METHODS for t in calls_during.get(m, [])]
    busiest_sends = max_per_window(sends)
    all_calls = [t for ts in calls_during.values() for t in ts]
    busiest_calls = max_per_window(all_calls)
    per_method = {m: len(ts) for m, ts in sorted(calls_during.items(), key=lambda kv: -len(kv[1]))}
    print(
        f"fuzzed {fuzzed_for:.0f} s: {sum(fuzzer.injected.values())} faults {dict(fuzzer.injected)};"
        f" {len(ids)} requests delivered once; busiest second: {busiest_sends} sends, {busiest_calls} calls;"
        f" calls by method {json.dumps(per_method)}"
    )
    # The node holds each second of its own clock to the ceiling; the proxy times arrivals, which the way there can
    # bunch by a few (the ceiling itself is checked exactly in tests/unit/test_outside_answers.py).
    assert busiest_sends <= SENDS_PER_S + 3, f"{busiest_sends} sends in one second (ceiling {SENDS_PER_S})"
    assert busiest_calls <= 120, f"{busiest_calls} calls in one second: something retries without back-off"
