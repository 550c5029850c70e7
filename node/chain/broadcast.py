"""Hands the node's signed transactions to the RPC, and reads what the RPC says back.

Guarantees:
- With `eth_sendRawTransactionSync` (EIP-7966) the send runs in the background and its answer is the receipt, passed
  to `on_receipt`; an endpoint without the method is found on the first send and from then on gets
  `eth_sendRawTransaction`, whose receipt the tracker polls.
- A transport failure never loses a transaction: it may or may not have arrived, so it stays tracked and the tracker
  finds its receipt or rebroadcasts it. A sync send that times out waiting for a block is tracked the same way.
- Any other refusal goes to `on_refused(tx, error, quiet, action)` with the refusal classified (`node.errors.Action`);
  the transaction manager decides (known already, nonce taken, a key without funds, what it carries).
- Per key, at most `max_per_s` transactions a second and `max_per_block` while the head stays at one block are
  handed to the RPC (new ones, replacements and rebroadcasts alike): a send waits for room, so no answer can make the
  node send in a hot loop.
- A sync send's answer that is not a receipt (malformed, missing fields) is not trusted: the tracker polls for it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from web3.exceptions import Web3RPCError

from node.chain import delivery
from node.chain.rpc import RpcError, RpcPool, classify, classify_answer, public_url
from node.errors import Action, RpcUnavailable
from node.jobs.store import StoredTx
from node.observability.conditions import CONDITIONS

log = logging.getLogger(__name__)

#: How long an `eth_sendRawTransactionSync` may wait for its block before the tracker takes over (the endpoint's
#: own timeout is usually shorter: anvil's is 30 s).
SYNC_SEND_TIMEOUT_S = 60.0
#: Error messages of endpoints that do not know `eth_sendRawTransactionSync`.
UNKNOWN_METHOD = ("not found", "not supported", "unsupported", "does not exist", "not available")


class SendCeiling:
    """At most `per_s` sends in any one-second window and `per_block` while the head stays at one block number, per
    sender. `wait(sender)` returns when a send is allowed and counts it."""

    def __init__(self, per_s: float, per_block: int, head: Callable[[], int]) -> None:
        self._per_s = max(1, int(per_s))
        self._per_block = max(1, per_block)
        self._head = head
        self._times: dict[str, collections.deque[float]] = {}
        self._blocks: dict[str, tuple[int, int]] = {}
        #: Times a send had to wait for room, for tests and metrics.
        self.waits = 0

    async def wait(self, sender: str) -> None:
        times = self._times.setdefault(sender, collections.deque())
        while True:
            now = time.monotonic()
            while times and now - times[0] >= 1.0:
                times.popleft()
            block, count = self._blocks.get(sender, (-1, 0))
            head = self._head()
            if block != head:
                block, count = head, 0
            if len(times) < self._per_s and count < self._per_block:
                times.append(now)
                self._blocks[sender] = (block, count + 1)
                return
            self.waits += 1
            # The window frees its oldest send within a second; a full block waits for the next head (checked again
            # every 100 ms rather than wired to the listener: a ceiling, not a hot path).
            pause = (1.0 - (now - times[0])) if len(times) >= self._per_s else 0.1
            await asyncio.sleep(max(0.01, pause))  # a rate limit, not a wait for a condition


class Broadcaster:
    """Hands signed transactions to the RPC under the per-key ceilings, and reads what it says back."""

    def __init__(
        self,
        rpc: RpcPool,
        *,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        on_receipt: Callable[[StoredTx, Any], None],
        on_refused: Callable[[StoredTx, str, bool, Action], Awaitable[None]],
        max_per_s: float = 100.0,
        max_per_block: int = 256,
        head: Callable[[], int] = lambda: 0,
    ) -> None:
        self._rpc = rpc
        self._spawn = spawn
        self._on_receipt = on_receipt
        self._on_refused = on_refused
        self.ceiling = SendCeiling(max_per_s, max_per_block, head)
        #: Whether the endpoint has `eth_sendRawTransactionSync`: unknown (None) until the first answer.
        self._sync: bool | None = None
        #: Sync sends still waiting for their answer, by (sender, nonce).
        self._waiting: collections.Counter[tuple[str, int]] = collections.Counter()
        #: Called before every send; raises to forbid it (a replica whose leader lease may have ended:
        #: `node.jobs.lease.Replica.check_may_send`). None: always allowed (a single node).
        self.guard: Callable[[], None] | None = None

    def awaiting(self, tx: StoredTx) -> bool:
        """Whether a sync send of `tx` is still waiting: its answer will bring the receipt."""
        return (tx.sender.lower(), tx.nonce) in self._waiting

    async def send(self, tx: StoredTx, *, quiet: bool = False) -> None:
        """Sends `tx` (`quiet`: a rebroadcast, whose refusals are expected and only logged). Raises what `guard`
        raises (`LeaseLost`), sending nothing, when it forbids sending."""
        if self.guard is not None:
            self.guard()
        if self._sync is False:
            await self._plain(tx, quiet=quiet)
        else:
            # Counted as awaited from now, not from when its task first runs: a head handled in between would
            # otherwise have the tracker ask for the receipt the answer is about to bring (one more call).
            slot = (tx.sender.lower(), tx.nonce)
            self._waiting[slot] += 1
            self._spawn(self._with_receipt(tx, slot, quiet=quiet))

    async def _plain(self, tx: StoredTx, *, quiet: bool) -> None:
        raw = tx.raw
        await self.ceiling.wait(tx.sender.lower())
        try:
            if self.guard is not None:  # checked again after the ceiling's wait
                self.guard()
            await self._rpc.call("eth_sendRawTransaction", lambda w3: w3.eth.send_raw_transaction(raw))
        except RpcUnavailable as exc:
            log.warning("nonce %d of %s may not have been sent (%s); will resend", tx.nonce, tx.sender, exc)
        except Web3RPCError as exc:
            await self._on_refused(tx, str(exc), quiet, classify(exc))

    async def _with_receipt(self, tx: StoredTx, slot: tuple[str, int], *, quiet: bool) -> None:
        try:
            await self.ceiling.wait(slot[0])
            if self.guard is not None:  # checked again after the ceiling's wait (a spawned task: logged, not raised)
                self.guard()
            answer = await self._rpc.request(
                "eth_sendRawTransactionSync", ["0x" + tx.raw.hex()], timeout_s=SYNC_SEND_TIMEOUT_S
            )
        except RpcUnavailable as exc:
            log.warning("nonce %d of %s may not have been sent (%s); will resend", tx.nonce, tx.sender, exc)
            return
        except RpcError as exc:
            message = exc.message.lower()
            unknown = exc.code == -32601 or any(s in message for s in UNKNOWN_METHOD)
            if unknown and self._sync is not True:
                shown = public_url(self._rpc.url)
                log.info("%s has no eth_sendRawTransactionSync (%s): polling receipts instead", shown, exc)
                self._sync = False
                await self._plain(tx, quiet=quiet)
            elif "timeout" in message or "timed out" in message or exc.code == 4:
                log.info("nonce %d of %s: no block yet (%s); tracking its receipt", tx.nonce, tx.sender, exc.message)
            else:
                await self._on_refused(tx, exc.message, quiet, classify_answer(exc.code, exc.message))
            return
        finally:
            self._waiting[slot] -= 1
            if self._waiting[slot] <= 0:
                del self._waiting[slot]
        try:
            receipt = delivery.receipt_from_json(answer)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            CONDITIONS.count("rpc", Action.UNKNOWN)
            log.warning("nonce %d of %s: the send's answer is no receipt (%s); polling", tx.nonce, tx.sender, exc)
            return
        self._sync = True
        self._on_receipt(tx, receipt)
