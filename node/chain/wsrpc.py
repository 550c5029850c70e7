"""A raw JSON-RPC client over one WebSocket: calls and subscriptions, no web3 formatting.

The listener reads every `RequestCreated` log through here. web3's subscription stream formats each notification
into AttributeDicts and HexBytes; under a burst of thousands of logs in one block that formatting was a tenth of the
node's CPU and held several MB at the peak, which the allocator then kept. Here a notification stays the dict
`json.loads` made of it (hex strings), which `CoordinatorAbi.decode_request_created` reads directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import aiohttp

from node.chain.rpc import RpcError, public_url

#: Seconds a call may wait for its answer before the connection is taken as dead.
CALL_TIMEOUT_S = 30.0
#: Seconds between WebSocket pings; a pong missing for half of this closes the socket (a dead peer or a half-open
#: TCP connection is found in at most 1.5 times this, instead of never).
HEARTBEAT_S = 15.0
#: Notifications read ahead of the consumer. Past this the reader stops reading the socket (unless a call waits for
#: its answer), so a burst of thousands of logs waits in the endpoint's and the kernel's buffers, not in ours.
READ_AHEAD = 256


class WsRpc:
    """`async with WsRpc(url) as ws:` then `await ws.request(...)`, `await ws.subscribe(...)`, and
    `async for sub_id, result in ws.notifications()` (or `await ws.next_notification()`, safe under a timeout). The
    socket is pinged every `heartbeat_s` seconds (None: never); a missing pong closes it. When the socket closes,
    pending calls and the notification stream raise `ConnectionError`."""

    def __init__(self, url: str, *, timeout_s: float = CALL_TIMEOUT_S, heartbeat_s: float | None = HEARTBEAT_S) -> None:
        self.url = url
        self._timeout_s = timeout_s
        self._heartbeat_s = heartbeat_s
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._pending_methods: dict[int, str] = {}
        #: Notifications as received (text): decoded one at a time by `notifications()`, so a burst waits here as
        #: compact strings rather than as the larger dicts `json.loads` makes of them.
        self._notes: asyncio.Queue[str | dict[str, Any] | None] = asyncio.Queue()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed_because: BaseException | None = None
        #: Set while the reader may go on: the consumer caught up, or a call waits for its answer.
        self._room = asyncio.Event()
        self._room.set()

    async def __aenter__(self) -> WsRpc:
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                self.url, max_msg_size=0, heartbeat=self._heartbeat_s, timeout=aiohttp.ClientWSTimeout(ws_receive=None)
            )
        except BaseException:
            await self._session.close()
            raise
        self._reader = asyncio.create_task(self._read(), name="ws-rpc-reader")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    async def _read(self) -> None:
        assert self._ws is not None
        reason: BaseException = ConnectionError(f"WebSocket {public_url(self.url)} closed")
        try:
            async for message in self._ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    if message.type is aiohttp.WSMsgType.ERROR:
                        reason = ConnectionError(f"WebSocket {public_url(self.url)} failed: {self._ws.exception()}")
                        break
                    continue
                data: str = message.data
                if '"eth_subscription"' in data[:64]:  # the usual key order; any other is found by _dispatch
                    self._notes.put_nowait(data)
                else:
                    self._dispatch(json.loads(data))
                while self._notes.qsize() >= READ_AHEAD and not self._pending:
                    self._room.clear()
                    await self._room.wait()
        except (aiohttp.ClientError, OSError, ValueError, RecursionError) as exc:
            reason = ConnectionError(f"WebSocket {public_url(self.url)} failed: {type(exc).__name__}: {exc}")
        finally:
            self._closed_because = reason
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(reason)
            self._pending.clear()
            self._notes.put_nowait(None)

    def _dispatch(self, answer: Any) -> None:
        for item in answer if isinstance(answer, list) else [answer]:
            if not isinstance(item, dict):
                continue
            if item.get("method") == "eth_subscription":
                self._notes.put_nowait(item)
                continue
            future = self._pending.pop(item.get("id"), None)  # type: ignore[arg-type]
            method = self._pending_methods.pop(item.get("id"), "?")  # type: ignore[arg-type]
            if future is None or future.done():
                continue
            error = item.get("error")
            if error is not None:
                future.set_exception(
                    RpcError(method, int(error.get("code", 0)), str(error.get("message", "")), error.get("data"))
                )
            else:
                future.set_result(item.get("result"))

    async def request(self, method: str, params: list[Any]) -> Any:
        """One call; an error answer raises `RpcError`, a closed or silent socket `ConnectionError`."""
        if self._ws is None or self._closed_because is not None:
            raise self._closed_because or ConnectionError("WsRpc used outside `async with`")
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        self._pending_methods[call_id] = method
        self._room.set()  # the reader must read on to find the answer
        try:
            await self._ws.send_str(json.dumps({"jsonrpc": "2.0", "id": call_id, "method": method, "params": params}))
            async with asyncio.timeout(self._timeout_s):
                return await future
        except TimeoutError:
            raise ConnectionError(
                f"WebSocket {public_url(self.url)}: no answer to {method} in {self._timeout_s:.0f} s"
            ) from None
        finally:
            self._pending.pop(call_id, None)
            self._pending_methods.pop(call_id, None)

    async def subscribe(self, kind: str, *params: Any) -> str:
        """`eth_subscribe`; returns the subscription id that `notifications()` tags its items with."""
        return str(await self.request("eth_subscribe", [kind, *params]))

    async def next_notification(self) -> tuple[str, Any]:
        """The next (subscription id, result), waiting for it; raises `ConnectionError` once the socket closed.
        Safe to cancel (e.g. under `asyncio.timeout`): nothing is lost, the next call returns the same item."""
        note = await self._notes.get()
        if self._notes.qsize() < READ_AHEAD // 2:
            self._room.set()
        if note is None:
            self._notes.put_nowait(None)  # every later call raises too
            raise self._closed_because or ConnectionError(f"WebSocket {public_url(self.url)} closed")
        try:
            message = json.loads(note) if isinstance(note, str) else note
            params = message.get("params") if isinstance(message, dict) else None
        except ValueError:
            params = None
        if not isinstance(params, dict):
            return "", None  # a malformed notification: the caller skips what it does not recognise
        return str(params.get("subscription")), params.get("result")

    async def notifications(self) -> AsyncIterator[tuple[str, Any]]:
        """(subscription id, result) in the order the endpoint sent them, until the socket closes (then
        `ConnectionError`)."""
        while True:
            yield await self.next_notification()
