"""The dApp's side of the benchmarks: raw JSON-RPC to anvil, request transactions signed ahead of time, and the
`RequestFulfilled` events seen over the requester's own WebSocket subscription (what a dApp would see)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from node.chain.contracts import model_id, signature
from node.devnet import DEFAULT_FEE_WEI, Devnet

MODEL = "echo/bench@1"
CALLBACK_GAS_LIMIT = 100_000
REQUEST_GAS = 250_000
T = TypeVar("T")


class BenchError(RuntimeError):
    pass


async def until(check: Callable[[], Awaitable[T | None]], *, timeout_s: float, what: str, every_s: float = 0.02) -> T:
    """Polls `check` until it returns a value; raises naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(every_s)


class Chain:
    """Raw JSON-RPC to anvil over one HTTP session (no web3 middleware between the requester and the chain)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url
        self._ids = itertools.count(1)

    async def call(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        async with self._session.post(self._url, json=body) as resp:
            answer = await resp.json(content_type=None)
        if "error" in answer:
            raise BenchError(f"{method}: {answer['error']}")
        return answer["result"]


class Deliveries:
    """Every `RequestFulfilled` of the coordinator, as the requester's own WebSocket subscription delivers it."""

    def __init__(self, ws_url: str, coordinator: str, topic: str) -> None:
        self._ws_url = ws_url
        self._filter = {"address": coordinator, "topics": [topic]}
        #: request id → (monotonic time the event arrived, block number)
        self.seen: dict[int, tuple[float, int]] = {}
        self._changed = asyncio.Event()
        self.subscribed = asyncio.Event()

    async def run(self, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(self._ws_url, max_msg_size=0) as ws:
            await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["logs", self._filter]})
            async for msg in ws:
                now = time.monotonic()
                data = json.loads(msg.data)
                if data.get("id") == 1:
                    self.subscribed.set()
                    continue
                entry = data.get("params", {}).get("result")
                if not entry or entry.get("removed"):
                    continue
                self.seen.setdefault(int(entry["topics"][1], 16), (now, int(entry["blockNumber"], 16)))
                self._changed.set()
        raise BenchError("the requester's WebSocket closed")

    async def wait_all(self, ids: list[int], *, timeout_s: float, alive: Callable[[], None]) -> None:
        await self.wait_count(ids, len(ids), timeout_s=timeout_s, alive=alive)

    async def wait_count(self, ids: list[int], count: int, *, timeout_s: float, alive: Callable[[], None]) -> None:
        """Waits until `count` of `ids` were delivered."""
        deadline = time.monotonic() + timeout_s
        missing = [i for i in ids if i not in self.seen]
        while len(ids) - len(missing) < count:
            alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{len(missing)} of {len(ids)} request(s) not delivered within {timeout_s:.0f} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(1.0, remaining))
            missing = [i for i in missing if i not in self.seen]


class Requester:
    """Signs request transactions from one dApp account ahead of time (local nonces) and sends them."""

    def __init__(self, dev: Devnet, chain: Chain, account: LocalAccount) -> None:
        assert dev.deployment is not None
        self._coordinator = dev.deployment.coordinator
        self._chain = chain
        self._account = account
        self._chain_id = dev.w3.eth.chain_id
        self._nonce = int(dev.w3.eth.get_transaction_count(account.address, "pending"))
        self._serial = itertools.count()
        self._created_topic = "0x" + keccak(text=event_signature(self._coordinator.abi, "RequestCreated")).hex()

    def sign(self, n: int) -> list[str]:
        raws = []
        for _ in range(n):
            payload = f"bench request {next(self._serial)}".encode()
            data = self._coordinator.encode_abi("requestInference", args=[model_id(MODEL), payload, CALLBACK_GAS_LIMIT])
            tx = {
                "to": self._coordinator.address,
                "data": data,
                "value": DEFAULT_FEE_WEI,
                "gas": REQUEST_GAS,
                "nonce": self._nonce,
                "chainId": self._chain_id,
                "maxFeePerGas": 50 * 10**9,
                "maxPriorityFeePerGas": 10**9,
                "type": 2,
            }
            self._nonce += 1
            raws.append("0x" + bytes(self._account.sign_transaction(tx).raw_transaction).hex())
        return raws

    def request_ids(self, logs: list[dict[str, Any]]) -> list[int]:
        return [int(entry["topics"][1], 16) for entry in logs if entry["topics"][0] == self._created_topic]

    async def send_sync(self, raw: str) -> tuple[int, int]:
        """Sends one request and waits for its receipt; returns (request id, block)."""
        receipt = await self._chain.call("eth_sendRawTransactionSync", raw)
        if int(receipt["status"], 16) != 1:
            raise BenchError(f"request tx {receipt['transactionHash']} reverted")
        (rid,) = self.request_ids(receipt["logs"])
        return rid, int(receipt["blockNumber"], 16)

    async def send_all(self, raws: list[str]) -> None:
        """Puts transactions in the mempool, in nonce order, without waiting for them to be mined."""
        for i in range(0, len(raws), 50):
            await asyncio.gather(*(self._chain.call("eth_sendRawTransaction", raw) for raw in raws[i : i + 50]))


def event_signature(abi: Any, name: str) -> str:
    return signature(next(e for e in abi if e.get("type") == "event" and e["name"] == name))
