"""Turns the coordinator's `RequestCreated` logs into requests for the scheduler.

Guarantees: on start and after every reconnect, logs are backfilled with `eth_getLogs` from the cursor (first the
configured start block), after the live subscription is open, so no log falls between the two; the same log may
then arrive twice and downstream drops the duplicate by request id. Without a WebSocket URL it polls over HTTP.
A dropped connection is retried with capped backoff; the listener never exits on an RPC error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from eth_typing import ChecksumAddress
from web3 import AsyncWeb3
from web3.types import FilterParams

from node.chain.contracts import CoordinatorAbi, InferenceRequest
from node.chain.rpc import ws_client

log = logging.getLogger(__name__)

RECONNECT_BASE_S = 0.5
RECONNECT_MAX_S = 15.0
MAX_LOG_RANGE = 5_000


class Listener:
    def __init__(
        self,
        http: AsyncWeb3[Any],
        ws_url: str | None,
        coordinator: ChecksumAddress,
        abi: CoordinatorAbi,
        *,
        start_block: int,
        poll_interval_s: float,
        on_request: Callable[[InferenceRequest], None],
    ) -> None:
        self._http = http
        self._ws_url = ws_url
        self._coordinator = coordinator
        self._abi = abi
        self._on_request = on_request
        self._poll_interval_s = poll_interval_s
        #: Next block to backfill from: everything below it has been handed on.
        self.cursor = start_block
        #: Highest chain head seen, for the lag shown to operators.
        self.head = 0

    def _filter(self, from_block: int | None = None, to_block: int | None = None) -> FilterParams:
        params: FilterParams = {"address": self._coordinator, "topics": [self._abi.request_created_topic]}
        if from_block is not None and to_block is not None:
            params["fromBlock"] = from_block
            params["toBlock"] = to_block
        return params

    def _emit(self, raw: Any) -> None:
        if raw.get("removed"):
            return
        try:
            request = self._abi.decode_request_created(raw)
        except Exception:
            log.exception("undecodable RequestCreated log in tx %s", raw.get("transactionHash"))
            return
        self._on_request(request)

    async def backfill(self, w3: AsyncWeb3[Any]) -> int:
        """Hands on every log from the cursor to the head; returns how many."""
        head = await w3.eth.block_number
        self.head = max(self.head, head)
        found = 0
        while self.cursor <= head:
            to_block = min(head, self.cursor + MAX_LOG_RANGE - 1)
            logs = await w3.eth.get_logs(self._filter(self.cursor, to_block))
            for raw in logs:
                self._emit(raw)
            found += len(logs)
            self.cursor = to_block + 1
        return found

    async def run(self) -> None:
        """Listens until cancelled, reconnecting with backoff."""
        failures = 0
        while True:
            try:
                if self._ws_url:
                    await self._run_ws(self._ws_url)
                else:
                    await self._run_polling()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(RECONNECT_MAX_S, RECONNECT_BASE_S * 2 ** (failures - 1))
                log.warning("listener lost the RPC (%s: %s); reconnecting in %.1f s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    async def _run_ws(self, url: str) -> None:
        async with ws_client(url) as w3:
            await w3.eth.subscribe("logs", self._filter())
            found = await self.backfill(w3)
            log.info(
                "listening to %s over WebSocket from block %d (backfilled %d)",
                self._coordinator,
                self.cursor,
                found,
            )
            async for message in w3.socket.process_subscriptions():
                raw = message["result"]
                self._emit(raw)
                # Only advance: a log of an old block (a resend) must not move the cursor back.
                self.cursor = max(self.cursor, int(raw["blockNumber"]))
            raise ConnectionError("WebSocket subscription ended")

    async def _run_polling(self) -> None:
        log.info(
            "polling %s over HTTP every %.2f s from block %d",
            self._coordinator,
            self._poll_interval_s,
            self.cursor,
        )
        while True:
            await self.backfill(self._http)
            await asyncio.sleep(self._poll_interval_s)
