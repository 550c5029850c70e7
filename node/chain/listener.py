"""Turns the coordinator's `RequestCreated` logs into requests for the scheduler, never missing one.

Guarantees:
- On start and after every reconnect, logs are backfilled with `eth_getLogs` from the persisted cursor, after the
  live subscriptions are open, so no log falls between the two. The same log may arrive twice; the store drops the
  duplicate. Without a WebSocket URL the listener polls the head and the logs over HTTP.
- A log is handed on once its block is `confirmations` deep (0: at once).
- Reorgs are found from block hashes (each new head's parent against the stored hash, and the stored hashes against
  the chain after a reconnect): the cursor rewinds to the fork, held logs of orphaned blocks are dropped, and
  `on_reorg(fork)` lets the node cancel jobs of orphaned requests; the backfill then re-reads the new branch.
- A provider that refuses a log range gets it split in halves until it answers.
- A dropped connection is retried with capped backoff; the listener never exits on an RPC error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from eth_typing import ChecksumAddress

from node.chain.contracts import CoordinatorAbi, InferenceRequest, as_int
from node.chain.rpc import RpcPool, is_transport_error
from node.chain.wsrpc import WsRpc
from node.jobs.store import JobStore

log = logging.getLogger(__name__)

RECONNECT_BASE_S = 0.5
RECONNECT_MAX_S = 5.0
MAX_LOG_RANGE = 5_000
#: Block hashes kept for reorg detection: deeper reorgs than this are not recognised.
KEEP_BLOCKS = 256
#: On WebSocket the cursor trails the head by this many blocks, so a reconnect re-reads logs whose notification may
#: have been in flight when the socket dropped (the store drops the duplicates).
WS_CURSOR_GRACE = 2
#: A backfill that takes longer than this says how far it got, this often.
BACKFILL_PROGRESS_S = 2.0


#: A raw JSON-RPC call: (method, params) -> the answer's `result` as sent (hex strings).
Call = Callable[[str, list[Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Head:
    number: int
    hash: str
    parent_hash: str
    base_fee_wei: int
    timestamp: int
    #: The block's gas limit (0 when the block did not say): what one transaction can use at most.
    gas_limit: int = 0


def _hex(value: Any) -> str:
    return value.lower() if isinstance(value, str) else "0x" + bytes(value).hex()


def as_head(block: Any) -> Head:
    """A block as web3 formats it or as JSON-RPC sends it (hex quantities)."""
    return Head(
        number=as_int(block["number"]),
        hash=_hex(block["hash"]),
        parent_hash=_hex(block["parentHash"]),
        base_fee_wei=as_int(block.get("baseFeePerGas") or 0),
        timestamp=as_int(block["timestamp"]),
        gas_limit=as_int(block.get("gasLimit") or 0),
    )


class Listener:
    def __init__(
        self,
        rpc: RpcPool,
        ws_url: str | None,
        coordinator: ChecksumAddress,
        abi: CoordinatorAbi,
        store: JobStore,
        *,
        start_block: int,
        confirmations: int,
        poll_interval_s: float,
        on_request: Callable[[InferenceRequest], None],
        on_head: Callable[[Head], None] = lambda head: None,
        on_reorg: Callable[[int], None] = lambda fork: None,
    ) -> None:
        self._rpc = rpc
        self._ws_url = ws_url
        self._coordinator = coordinator
        self._abi = abi
        self._store = store
        self._confirmations = confirmations
        self._poll_interval_s = poll_interval_s
        self._on_request = on_request
        self._on_head = on_head
        self._on_reorg = on_reorg
        #: Next block to read logs from: every log below it has been handed on.
        self.cursor = store.cursor(start_block)
        self._start_block = start_block
        self._hashes: dict[int, str] = store.blocks()
        #: Hashes seen since the last save (written once each, not the whole window on every head).
        self._unsaved: dict[int, str] = {}
        #: Logs seen live but not yet `confirmations` deep, by block number.
        self._held: dict[int, list[InferenceRequest]] = {}
        self._log_range = MAX_LOG_RANGE
        self.head: Head | None = None
        #: monotonic time the chain was last heard from (a head or a log), for readiness.
        self.last_heard = 0.0
        self.connected = False
        self.reorgs = 0
        #: After a rewind: the head at that moment. Until the cursor passes it, every new head re-reads the logs
        #: with eth_getLogs (a live log of the new branch may have been dropped with the orphaned ones).
        self._reread_to: int | None = None

    @property
    def lag_blocks(self) -> int:
        """Blocks between the head and what has been handed on (0 when caught up)."""
        if self.head is None:
            return 0
        return max(0, self.head.number - self._confirmations - self.cursor + 1)

    def _filter(self, from_block: int | None = None, to_block: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"address": self._coordinator, "topics": [self._abi.request_created_topic]}
        if from_block is not None and to_block is not None:
            params["fromBlock"] = hex(from_block)
            params["toBlock"] = hex(to_block)
        return params

    def _counted(self, request: Call) -> Call:
        """`request`, counted by method in the RPC pool's call counts (what metrics and benchmarks read)."""

        async def call(method: str, params: list[Any]) -> Any:
            self._rpc.calls[method] += 1
            return await request(method, params)

        return call

    # ----------------------------------------------------------------------------------------------- logs

    def _decode(self, raw: Any) -> InferenceRequest | None:
        try:
            return self._abi.decode_request_created(raw)
        except Exception:
            log.exception("undecodable RequestCreated log in tx %s", raw.get("transactionHash"))
            return None

    def _emit(self, request: InferenceRequest) -> None:
        known = self._hashes.get(request.block_number)
        if known is not None and known != request.block_hash:
            log.info("dropping request %d: its block %d was orphaned", request.request_id, request.block_number)
            return
        self._on_request(request)

    def _on_log(self, raw: Any) -> None:
        """A live log. It is decoded at once and only the request is kept while it waits for its confirmations: a
        block of thousands of requests must not hold thousands of parsed JSON notifications (each ~2.5 kB of dict,
        keys and hex strings, five times the request it carries)."""
        self.last_heard = time.monotonic()
        if raw.get("removed"):
            log.info("log of block %d removed by a reorg", as_int(raw["blockNumber"]))
            self._held.get(as_int(raw["blockNumber"]), []).clear()
            return
        request = self._decode(raw)
        if request is None:
            return
        if self.head is not None and request.block_number <= self.head.number - self._confirmations:
            self._emit(request)
        else:
            self._held.setdefault(request.block_number, []).append(request)

    def _release(self) -> None:
        if self.head is None:
            return
        ready = self.head.number - self._confirmations
        for block in sorted(b for b in self._held if b <= ready):
            for request in self._held.pop(block):
                self._emit(request)

    # --------------------------------------------------------------------------------------------- heads

    async def _block(self, call: Call, number: int | str) -> Head:
        block = await call("eth_getBlockByNumber", [hex(number) if isinstance(number, int) else number, False])
        if block is None:
            raise ConnectionError(f"the endpoint has no block {number} (a node still syncing?)")
        return as_head(block)

    async def _on_new_head(self, call: Call, head: Head) -> None:
        """Checks the head against the stored hashes (rewinding on a reorg), records it, releases held logs."""
        self.last_heard = time.monotonic()
        known = self._hashes.get(head.number)
        if known == head.hash:  # already seen (before a restart, or a repeated notification)
            if self.head is None or head.number > self.head.number:
                self.head = head
                self._on_head(head)
            return
        parent = self._hashes.get(head.number - 1)
        if known is not None or (parent is not None and parent != head.parent_hash):
            await self._rewind(call, head)
        self._hashes[head.number] = head.hash
        self._unsaved[head.number] = head.hash
        self.head = head
        self._on_head(head)
        self._release()

    async def _rewind(self, call: Call, head: Head) -> None:
        """The chain changed under stored hashes: finds the fork (the lowest block whose hash changed) and rewinds."""
        fork = head.number
        number = head.number - 1
        canonical_parent = head.parent_hash
        while number in self._hashes and self._hashes[number] != canonical_parent:
            fork = number
            block = await self._block(call, number)
            canonical_parent = block.parent_hash
            number -= 1
        self.reorgs += 1
        log.warning("reorg: blocks from %d on were replaced (new head %d); rewinding", fork, head.number)
        for stale in [n for n in self._hashes if n >= fork]:
            del self._hashes[stale]
        for stale in [n for n in self._unsaved if n >= fork]:
            del self._unsaved[stale]
        for stale in [n for n in self._held if n >= fork]:
            del self._held[stale]
        self._store.forget_blocks_from(fork)
        self.cursor = min(self.cursor, fork)
        self._store.set_cursor(self.cursor)
        self._reread_to = max(head.number, self._reread_to or 0)
        self._on_reorg(fork)

    async def _check_stored(self, call: Call, head: Head) -> None:
        """After a (re)connect: the newest stored hash must still be on the chain, else a reorg happened meanwhile."""
        below = [n for n in self._hashes if n <= head.number]
        if not below:
            return
        top = max(below)
        block = await self._block(call, top)
        if block.hash != self._hashes[top]:
            await self._rewind(call, Head(top + 1, "", block.hash, 0, 0))

    def _save_progress(self) -> None:
        if self.head is None:
            self._store.set_cursor(self.cursor)
            return
        oldest = self.head.number - KEEP_BLOCKS
        self._store.save_progress(
            self.cursor, [(n, h) for n, h in self._unsaved.items() if n > oldest], keep=KEEP_BLOCKS
        )
        self._unsaved.clear()
        if len(self._hashes) > KEEP_BLOCKS:
            for old in [n for n in self._hashes if n <= oldest]:
                del self._hashes[old]

    # ------------------------------------------------------------------------------------------- backfill

    async def _get_logs(self, call: Call, from_block: int, to_block: int) -> list[Any]:
        """`eth_getLogs` over [from, to], halving the range while the provider refuses it."""
        try:
            return list(await call("eth_getLogs", [self._filter(from_block, to_block)]))
        except Exception as exc:
            if is_transport_error(exc) or from_block == to_block:
                raise
            self._log_range = max(1, (to_block - from_block + 1) // 2)
            log.info(
                "provider refused logs %d-%d (%s); splitting to %d blocks", from_block, to_block, exc, self._log_range
            )
            middle = from_block + self._log_range - 1
            return await self._get_logs(call, from_block, middle) + await self._get_logs(call, middle + 1, to_block)

    async def backfill(self, call: Call) -> int:
        """Hands on every log from the cursor to the confirmed head; returns how many."""
        if self.head is None:
            return 0
        target = self.head.number - self._confirmations
        found, first, said = 0, self.cursor, time.monotonic()
        while self.cursor <= target:
            to_block = min(target, self.cursor + self._log_range - 1)
            logs = await self._get_logs(call, self.cursor, to_block)
            for raw in logs:
                if (request := self._decode(raw)) is not None:
                    self._emit(request)
            found += len(logs)
            self.cursor = to_block + 1
            self._save_progress()
            if self.cursor <= target and time.monotonic() - said >= BACKFILL_PROGRESS_S:  # a long catch-up: progress
                said = time.monotonic()
                share = 100 * (self.cursor - first) / max(1, target - first + 1)
                log.info("backfill: block %d of %d (%.0f%%), %d request(s) so far", self.cursor, target, share, found)
        return found

    # ---------------------------------------------------------------------------------------------- loops

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
                self.connected = False
                failures += 1
                delay = min(RECONNECT_MAX_S, RECONNECT_BASE_S * 2 ** (failures - 1))
                log.warning("listener lost the RPC (%s: %s); reconnecting in %.1f s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    async def _run_ws(self, url: str) -> None:
        async with WsRpc(url) as ws:
            call = self._counted(ws.request)
            heads = await ws.subscribe("newHeads")
            await ws.subscribe("logs", self._filter())
            head = await self._block(call, "latest")
            await self._check_stored(call, head)
            await self._on_new_head(call, head)
            found = await self.backfill(call)
            self.connected = True
            log.info(
                "listening to %s over WebSocket at block %d (backfilled %d, cursor %d)",
                self._coordinator,
                head.number,
                found,
                self.cursor,
            )
            async for subscription, result in ws.notifications():
                if subscription == heads:
                    head = as_head(result)
                    await self._on_new_head(call, head)
                    if self._reread_to is not None:  # read the new branch's logs from the fork
                        await self.backfill(call)
                        if self.cursor > self._reread_to:
                            self._reread_to = None
                        continue
                    self.cursor = max(self.cursor, head.number - self._confirmations - WS_CURSOR_GRACE + 1)
                    self._save_progress()
                else:
                    self._on_log(result)
            raise ConnectionError("WebSocket subscription ended")

    async def _run_polling(self) -> None:
        call = self._rpc.request
        head = await self._block(call, "latest")
        await self._check_stored(call, head)
        self.connected = True
        log.info(
            "polling %s over HTTP every %.2f s from block %d", self._coordinator, self._poll_interval_s, self.cursor
        )
        while True:
            await self._on_new_head(call, head)
            self._reread_to = None  # polling reads every block with eth_getLogs anyway
            await self.backfill(call)
            await asyncio.sleep(self._poll_interval_s)
            head = await self._block(call, "latest")
