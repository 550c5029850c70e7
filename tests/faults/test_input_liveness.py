"""Input liveness: no answer (or silence) from an RPC endpoint stops the node from seeing requests, or makes it spin.

The node runs as a process against a real anvil; between them the counting JSON-RPC proxy (`bench/rpcproxy.py`) plays
a provider whose WebSocket goes quiet or whose eth_getLogs is rate limited, and a TCP gate plays an endpoint that
goes down or refuses the WebSocket upgrade. Each test checks what an operator would: the process is alive, every
request is delivered exactly once, the calls during the fault stay under a ceiling, and how long recovery takes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bench.rpcproxy import CountingRpcProxy, proxy_in_thread
from node.devnet import free_port, wait_until
from tests.faults.conftest import MODEL, FaultRig, readyz
from tests.proxy import TcpProxy

pytestmark = pytest.mark.faults

#: Staleness bounds for the tests (seconds): a silent socket is checked after 1-3 s instead of 5-60 s.
FAST_STALE: dict[str, Any] = {"stale_head_min_s": 1.0, "stale_head_max_s": 3.0, "poll_interval_s": 0.5}


class Gate(TcpProxy):
    """A TCP proxy that counts every connection attempt and can play a dead endpoint (accept, then drop)."""

    def __init__(self, target_port: int) -> None:
        self.attempts: list[float] = []
        self._live_port = target_port
        super().__init__(target_port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts.append(time.monotonic())
        await super()._handle(reader, writer)

    def down(self) -> None:
        """Every connection, open or new, is dropped."""
        self.target_port = free_port()  # nothing listens there: each new connection is aborted
        self._run(self._abort_all())

    async def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def attempts_since(self, t: float) -> int:
        return sum(1 for a in self.attempts if a >= t)


def configure(
    rig: FaultRig, *, rpc_url: str, ws_url: str, fallback_rpc: str = "", fallback_ws: str = "", **chain: Any
) -> Path:
    path = rig.dev.write_node_config(
        {MODEL: {"url": rig.container_url, "timeout_s": 10, "max_concurrency": 8}},
        rpc_url=rpc_url,
        ws_url=ws_url,
        **chain,
    )
    extra = "".join(
        f'{key} = ["{url}"]\n'
        for key, url in (("fallback_rpc_urls", fallback_rpc), ("fallback_ws_urls", fallback_ws))
        if url
    )
    path.write_text(path.read_text().replace("[chain]\n", "[chain]\n" + extra, 1))
    rig.config = path
    return path


def node_log(rig: FaultRig) -> str:
    return (rig.dev.workdir / "node.log").read_text()


def delivered_once(rig: FaultRig, ids: list[int]) -> None:
    fulfilled = rig.fulfillments()
    assert {i: fulfilled[i] for i in ids} == dict.fromkeys(ids, 1)


@pytest.fixture
def rpc(rig: FaultRig) -> Iterator[CountingRpcProxy]:
    with proxy_in_thread(rig.dev.rpc_port) as proxy:
        try:
            yield proxy
        finally:  # the node first: the proxy's shutdown waits for the node's open WebSocket
            if rig.node is not None and rig.node.popen.poll() is None:
                rig.kill_node()


def test_silent_websocket_is_replaced_and_polled_around_and_an_idle_chain_is_left_alone(
    rig: FaultRig, rpc: CountingRpcProxy
) -> None:
    dev = rig.dev
    configure(rig, rpc_url=rpc.http_url, ws_url=rpc.ws_url, **FAST_STALE)
    node = rig.start_node()
    warm = dev.request_many(MODEL, [b"warm"])
    rig.wait_fulfilled(warm)
    rig.wait_states("the warm-up job confirmed", confirmed=1)

    # An idle automine chain: no heads for several staleness bounds is not a stale socket.
    checks = rpc.http_calls["eth_blockNumber"]
    wait_until(
        lambda: rpc.http_calls["eth_blockNumber"] >= checks + 3,
        timeout_s=30,
        what="3 staleness checks",
        alive=node.check_alive,
    )
    assert rpc.ws_calls["eth_subscribe"] == 2, "the idle chain made the node reconnect"
    assert readyz(dev.api_port)[0] == 200

    # The socket stays open and answers calls, but sends no notification.
    rpc.mute_notifications = True
    muted_at = time.monotonic()
    subscribes = rpc.ws_calls["eth_subscribe"]
    ids = dev.request_many(MODEL, [f"muted-{i}".encode() for i in range(3)])
    rig.wait_fulfilled(ids, timeout_s=30)
    recovered_s = time.monotonic() - muted_at
    wait_until(
        lambda: any(c.startswith("ws ws://127.0.0.1") and "stale" in c for c in readyz(dev.api_port)[1]["conditions"]),
        timeout_s=30,
        what="the stale WebSocket on /readyz",
        alive=node.check_alive,
    )
    # Still muted: the node keeps trying the WebSocket (with back-off) and keeps delivering by HTTP meanwhile.
    more: list[int] = []
    deadline = time.monotonic() + 90
    while rpc.ws_calls["eth_subscribe"] < subscribes + 4:  # 2 reconnects, each to a socket still silent
        assert time.monotonic() < deadline, "the node stopped trying the WebSocket"
        more += dev.request_many(MODEL, [f"muted-late-{len(more)}".encode()])
        rig.wait_fulfilled(more[-1:], timeout_s=30)
    muted_s = time.monotonic() - muted_at
    reconnects = (rpc.ws_calls["eth_subscribe"] - subscribes) / 2
    logs_per_s = len([t for t in rpc.times.get("eth_getLogs", []) if t >= muted_at]) / muted_s

    # The notifications come back: the WebSocket is used again, nothing is delivered twice.
    rpc.mute_notifications = False
    unmuted_at = time.monotonic()
    after: list[int] = []
    while "stale" in str(readyz(dev.api_port)[1]["conditions"]):  # cleared by the first head a socket sends
        assert time.monotonic() - unmuted_at < 90, "the WebSocket was not used again"
        after += dev.request_many(MODEL, [f"after-{len(after)}".encode()])
        rig.wait_fulfilled(after[-1:], timeout_s=30)
    back_s = time.monotonic() - unmuted_at
    after += dev.request_many(MODEL, [f"after-{len(after)}".encode() for _ in range(3)])
    rig.wait_fulfilled(after, timeout_s=30)
    rig.wait_states("every job confirmed", confirmed=4 + len(more) + len(after))
    node.check_alive()
    delivered_once(rig, [*warm, *ids, *more, *after])
    assert node_log(rig).count("stale") >= 1
    assert reconnects <= muted_s / 1.0 + 1, f"{reconnects} reconnects in {muted_s:.0f} s"
    assert logs_per_s <= 4.0, f"{logs_per_s:.1f} eth_getLogs/s while the socket was silent"
    print(
        f"silent WebSocket: 3 requests delivered {recovered_s:.1f} s after the mute; {reconnects:.0f} reconnects and "
        f"{logs_per_s:.2f} eth_getLogs/s over {muted_s:.0f} s muted; WebSocket in use again {back_s:.1f} s after the "
        "unmute; idle chain: 0 reconnects"
    )


def test_a_log_subscription_gone_quiet_while_heads_come_loses_no_request(rig: FaultRig, rpc: CountingRpcProxy) -> None:
    """The provider keeps sending heads but no longer the logs: the socket looks healthy. The cursor moves only by
    eth_getLogs reads (`log_reconcile_s`), so the requests are found by the next read; before, the cursor followed
    the heads past them and they were never served."""
    dev = rig.dev
    configure(rig, rpc_url=rpc.http_url, ws_url=rpc.ws_url, log_reconcile_s=1.0)
    node = rig.start_node()
    warm = dev.request_many(MODEL, [b"warm"])
    rig.wait_fulfilled(warm)
    rpc.mute_log_notifications = True
    muted_at = time.monotonic()
    ids = dev.request_many(MODEL, [f"quiet-logs-{i}".encode() for i in range(4)])
    dev.w3.provider.make_request("anvil_mine", [3])  # type: ignore[arg-type]  # heads keep coming
    rig.wait_fulfilled(ids, timeout_s=30)
    found_s = time.monotonic() - muted_at
    delivered_once(rig, ids)
    node.check_alive()
    assert rpc.ws_calls["eth_subscribe"] == 2, "the socket was replaced: heads alone must keep it"
    print(f"logs subscription muted: 4 requests found by eth_getLogs and delivered {found_s:.1f} s later")


def test_primary_http_and_websocket_down_fail_over_to_the_fallbacks(rig: FaultRig, rpc: CountingRpcProxy) -> None:
    dev = rig.dev
    primary = Gate(dev.rpc_port)
    try:
        configure(
            rig,
            rpc_url=primary.url,
            ws_url=primary.url.replace("http://", "ws://"),
            fallback_rpc=rpc.http_url,
            fallback_ws=rpc.ws_url,
            **FAST_STALE,
        )
        node = rig.start_node()
        warm = dev.request_many(MODEL, [b"warm"])
        rig.wait_fulfilled(warm)

        primary.down()
        down_at = time.monotonic()
        ids = dev.request_many(MODEL, [f"down-{i}".encode() for i in range(3)])
        rig.wait_fulfilled(ids, timeout_s=30)
        recovered_s = time.monotonic() - down_at
        wait_until(
            lambda: node_log(rig).count("over WebSocket ws://127.0.0.1") >= 2,
            timeout_s=30,
            what="the fallback WebSocket",
        )
        more = dev.request_many(MODEL, [f"down-late-{i}".encode() for i in range(3)])
        rig.wait_fulfilled(more, timeout_s=30)
        down_s = time.monotonic() - down_at
        rig.wait_states("every job confirmed", confirmed=7)
        node.check_alive()
        delivered_once(rig, [*warm, *ids, *more])
        assert rpc.ws_calls["eth_subscribe"] >= 2, "the fallback WebSocket was never used"
        dead = primary.attempts_since(down_at)
        # one failover each for HTTP and the WebSocket (a pooled connection or two), then the fallbacks are kept
        assert dead <= 4 + down_s * 0.5, f"{dead} connections to the dead primary in {down_s:.1f} s"
        print(
            f"primary down: 3 requests delivered {recovered_s:.1f} s after; {dead} connections to the dead primary "
            f"over {down_s:.1f} s"
        )
    finally:
        primary.close()


def test_rate_limited_get_logs_backs_off_without_shrinking_the_range(rig: FaultRig, rpc: CountingRpcProxy) -> None:
    dev = rig.dev
    configure(rig, rpc_url=rpc.http_url, ws_url="", poll_interval_s=0.5)
    node = dev.start_node(rig.config)  # type: ignore[arg-type]
    rig.node = node
    wait_until(lambda: "polling" in node_log(rig), timeout_s=60, what="the node to poll", alive=node.check_alive)
    warm = dev.request_many(MODEL, [b"warm"])
    rig.wait_fulfilled(warm)

    limited = {"left": 14, "null_blocks": 0}
    ranges: list[tuple[int, int]] = []

    def fault(call: dict[str, Any]) -> web.Response | None:
        method = call.get("method")
        if method == "eth_getLogs" and limited["left"] > 0:
            limited["left"] -= 1
            error = {"code": -32005, "message": "Too Many Requests"}
            return web.json_response(
                {"jsonrpc": "2.0", "id": call.get("id"), "error": error}, status=429, headers={"Retry-After": "0.2"}
            )
        if method == "eth_getLogs":
            f = call["params"][0]
            ranges.append((int(f["fromBlock"], 16), int(f["toBlock"], 16)))
        if method == "eth_getBlockByNumber" and limited["null_blocks"]:
            return web.json_response({"jsonrpc": "2.0", "id": call.get("id"), "result": None})
        return None

    fault_at = time.monotonic()
    rpc.fault = fault
    ids = dev.request_many(MODEL, [f"limited-{i}".encode() for i in range(3)])
    rig.wait_fulfilled(ids, timeout_s=60)
    fault_s = time.monotonic() - fault_at
    times = [t for t in rpc.times["eth_getLogs"] if t >= fault_at]
    peak = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    assert limited["left"] == 0
    assert "splitting" not in node_log(rig), "a rate limit was taken for a range refusal"

    # The endpoint answers null blocks while 6,000 blocks are mined: the node backs off (no hot loop), then reads
    # the 6,000-block gap in a few calls, not one per block.
    limited["null_blocks"] = 1
    null_at = time.monotonic()
    dev.w3.provider.make_request("anvil_mine", [6000])  # type: ignore[arg-type]
    before = len(ranges)
    limited["null_blocks"] = 0
    open_at = time.monotonic()
    null_rate = sum(1 for t in rpc.times["eth_getBlockByNumber"] if null_at <= t < open_at) / (open_at - null_at)
    gap = dev.request_many(MODEL, [f"gap-{i}".encode() for i in range(3)])
    rig.wait_fulfilled(gap, timeout_s=60)
    gap_s = time.monotonic() - open_at
    gap_calls = len(ranges) - before
    biggest = max(t - f + 1 for f, t in ranges[before:])
    rig.wait_states("every job confirmed", confirmed=7)
    node.check_alive()
    delivered_once(rig, [*warm, *ids, *gap])
    assert peak <= 6, f"{peak} eth_getLogs in one second while rate limited"
    assert null_rate <= 3.0, f"{null_rate:.1f} eth_getBlockByNumber/s while the endpoint answered null"
    assert biggest >= 5_000, f"the log range did not grow back (largest {biggest} blocks)"
    assert gap_calls <= gap_s / 0.5 + 4, f"{gap_calls} eth_getLogs for a 6,000-block gap"
    print(
        f"rate limit: 14 x 429 cleared, 3 requests delivered {fault_s:.1f} s after, peak {peak} eth_getLogs/s; "
        f"null blocks: {null_rate:.2f} eth_getBlockByNumber/s over {open_at - null_at:.0f} s; 6,000-block gap read "
        f"in {gap_calls} eth_getLogs (largest {biggest} blocks), 3 requests delivered {gap_s:.1f} s after"
    )


def test_refused_websocket_upgrade_falls_back_to_http_polling_with_bounded_retries(
    rig: FaultRig, rpc: CountingRpcProxy
) -> None:
    """The WebSocket URL answers HTTP but refuses the upgrade (a misconfigured gateway): requests are still seen,
    by HTTP polling, and the refusing endpoint is retried with back-off, not in a loop."""
    dev = rig.dev
    refusing = Gate(int(rig.container_url.rsplit(":", 1)[1]))  # the container: HTTP, no WebSocket
    try:
        configure(rig, rpc_url=rpc.http_url, ws_url=refusing.url.replace("http://", "ws://"), **FAST_STALE)
        node = dev.start_node(rig.config)  # type: ignore[arg-type]
        rig.node = node
        ids = dev.request_many(MODEL, [f"no-ws-{i}".encode() for i in range(3)])
        rig.wait_fulfilled(ids, timeout_s=60)
        wait_until(
            lambda: len(refusing.attempts) >= 4, timeout_s=60, what="4 WebSocket attempts", alive=node.check_alive
        )
        spread = refusing.attempts[3] - refusing.attempts[0]
        more = dev.request_many(MODEL, [f"no-ws-late-{i}".encode() for i in range(3)])
        rig.wait_fulfilled(more, timeout_s=30)
        node.check_alive()
        delivered_once(rig, [*ids, *more])
        _, ready = readyz(dev.api_port)
        assert any(c.startswith("ws ws://127.0.0.1") for c in ready["conditions"]), ready
        # back-off between rounds: ~1 + 2 + 4 s (jitter 0.8-1), never a loop
        assert spread >= 4.5, f"4 upgrade attempts within {spread:.1f} s"
        print(f"refused upgrade: 4 WebSocket attempts spread over {spread:.1f} s; 6 requests delivered by HTTP polling")
    finally:
        refusing.close()
