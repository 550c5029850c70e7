"""A JSON-RPC proxy that counts the calls passing through it, by method, over HTTP and WebSocket.

The benchmark puts it between the node and anvil to count what the node asks of its RPC provider (what a hosted
provider bills); the fault tests use `refuse` to play a provider that lacks a method. Subscription notifications
flow from the server to the node and are not calls; every JSON-RPC message the node sends is one (each element of a
batch counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
from aiohttp import web

from node.devnet import free_port


class CountingRpcProxy:
    """Forwards 127.0.0.1:`port` (HTTP and WebSocket) to anvil at `upstream_port`, counting calls by method."""

    def __init__(self, upstream_port: int, *, refuse: frozenset[str] = frozenset()) -> None:
        self._upstream_http = f"http://127.0.0.1:{upstream_port}"
        self._upstream_ws = f"ws://127.0.0.1:{upstream_port}"
        self.port = free_port()
        #: HTTP methods answered with JSON-RPC "method not found" (-32601), as by a provider that lacks them.
        self.refuse = refuse
        self.http_calls: Counter[str] = Counter()
        self.ws_calls: Counter[str] = Counter()
        #: While true, subscription notifications are not passed on to the client (calls are still answered): a
        #: WebSocket that stays open but has gone quiet.
        self.mute_notifications = False
        #: While true, only log notifications are dropped (heads still come): a `logs` subscription gone quiet.
        self.mute_log_notifications = False
        #: Called with each HTTP JSON-RPC call (a dict) before it is forwarded; a `web.StreamResponse` it returns
        #: is sent instead (fault injection), None forwards the call. May be a coroutine function.
        self.fault: Callable[[dict[str, Any]], Any] | None = None
        #: monotonic time of each HTTP call, by method (for rate ceilings).
        self.times: dict[str, list[float]] = {}
        #: Open WebSocket relays (closed on exit, so the proxy stops while a node is still connected).
        self._relays: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.http_calls.clear()
        self.ws_calls.clear()

    @property
    def total(self) -> int:
        return sum(self.http_calls.values()) + sum(self.ws_calls.values())

    def by_method(self) -> dict[str, int]:
        return dict((self.http_calls + self.ws_calls).most_common())

    async def __aenter__(self) -> CountingRpcProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/", self._handle)
        # In-flight calls (a fault stalling, a send waiting for its block) are cut off at exit, not waited for.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for relay in list(self._relays):
            relay.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    @staticmethod
    def _count(text: str | bytes, into: Counter[str]) -> None:
        try:
            message: Any = json.loads(text)
        except ValueError:
            into["(not JSON)"] += 1
            return
        for call in message if isinstance(message, list) else [message]:
            into[str(call.get("method", "(no method)")) if isinstance(call, dict) else "(not a call)"] += 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._relay_ws(request)
        body = await request.read()
        self._count(body, self.http_calls)
        try:
            call = json.loads(body)
        except ValueError:
            call = None
        if isinstance(call, dict):
            self.times.setdefault(str(call.get("method")), []).append(time.monotonic())
        if isinstance(call, dict) and call.get("method") in self.refuse:
            error = {"code": -32601, "message": f"the method {call['method']} does not exist/is not available"}
            return web.json_response({"jsonrpc": "2.0", "id": call.get("id"), "error": error})
        if isinstance(call, dict) and self.fault is not None:
            injected = self.fault(call)
            if inspect.isawaitable(injected):
                injected = await injected
            if injected is not None:
                return injected  # type: ignore[no-any-return]
        async with self._session.post(
            self._upstream_http, data=body, headers={"Content-Type": "application/json"}
        ) as upstream:
            answer = await upstream.read()
            return web.Response(body=answer, status=upstream.status, content_type="application/json")

    async def _relay_ws(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        client = web.WebSocketResponse(max_msg_size=0)
        await client.prepare(request)
        current = asyncio.current_task()
        if current is not None:
            self._relays.add(current)
            current.add_done_callback(self._relays.discard)
        async with self._session.ws_connect(self._upstream_ws, max_msg_size=0) as upstream:

            async def downstream() -> None:
                async for msg in upstream:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        if self.mute_notifications and '"eth_subscription"' in msg.data:
                            continue
                        if (
                            self.mute_log_notifications
                            and '"eth_subscription"' in msg.data
                            and '"logIndex"' in msg.data
                        ):
                            continue
                        await client.send_str(msg.data)
                    elif msg.type is aiohttp.WSMsgType.BINARY:
                        await client.send_bytes(msg.data)
                await client.close()

            task = asyncio.create_task(downstream())
            try:
                async for msg in client:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        self._count(msg.data, self.ws_calls)
                        await upstream.send_str(msg.data)
                    elif msg.type is aiohttp.WSMsgType.BINARY:  # web3's WebSocketProvider sends bytes
                        self._count(msg.data, self.ws_calls)
                        await upstream.send_bytes(msg.data)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return client


@contextlib.contextmanager
def proxy_in_thread(upstream_port: int, *, refuse: frozenset[str] = frozenset()) -> Iterator[CountingRpcProxy]:
    """The proxy on an event loop of its own thread, for synchronous tests."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="rpc-proxy", daemon=True)
    thread.start()
    proxy = CountingRpcProxy(upstream_port, refuse=refuse)
    asyncio.run_coroutine_threadsafe(proxy.__aenter__(), loop).result(timeout=10)
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.__aexit__(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
