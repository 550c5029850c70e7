"""Hands the node's signed transactions to the RPC, and reads what the RPC says back.

Guarantees:
- With `eth_sendRawTransactionSync` (EIP-7966) the send runs in the background and its answer is the receipt, passed
  to `on_receipt`; an endpoint without the method is found on the first send and from then on gets
  `eth_sendRawTransaction`, whose receipt the tracker polls.
- A transport failure never loses a transaction: it may or may not have arrived, so it stays tracked and the tracker
  finds its receipt or rebroadcasts it. A sync send that times out waiting for a block is tracked the same way.
- Any other refusal goes to `on_refused(tx, error, quiet)`, which decides (known already, nonce taken, invalid).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from web3.exceptions import Web3RPCError

from node.chain import delivery
from node.chain.rpc import RpcError, RpcPool, public_url
from node.errors import RpcUnavailable
from node.jobs.store import StoredTx

log = logging.getLogger(__name__)

#: How long an `eth_sendRawTransactionSync` may wait for its block before the tracker takes over (the endpoint's
#: own timeout is usually shorter: anvil's is 30 s).
SYNC_SEND_TIMEOUT_S = 60.0
#: Error messages of endpoints that do not know `eth_sendRawTransactionSync`.
UNKNOWN_METHOD = ("not found", "not supported", "unsupported", "does not exist", "not available")


class Broadcaster:
    def __init__(
        self,
        rpc: RpcPool,
        *,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        on_receipt: Callable[[StoredTx, Any], None],
        on_refused: Callable[[StoredTx, str, bool], Awaitable[None]],
    ) -> None:
        self._rpc = rpc
        self._spawn = spawn
        self._on_receipt = on_receipt
        self._on_refused = on_refused
        #: Whether the endpoint has `eth_sendRawTransactionSync`: unknown (None) until the first answer.
        self._sync: bool | None = None
        #: Sync sends still waiting for their answer, by (sender, nonce).
        self._waiting: collections.Counter[tuple[str, int]] = collections.Counter()

    def awaiting(self, tx: StoredTx) -> bool:
        """Whether a sync send of `tx` is still waiting: its answer will bring the receipt."""
        return (tx.sender.lower(), tx.nonce) in self._waiting

    async def send(self, tx: StoredTx, *, quiet: bool = False) -> None:
        """Sends `tx` (`quiet`: a rebroadcast, whose refusals are expected and only logged)."""
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
        try:
            await self._rpc.call("eth_sendRawTransaction", lambda w3: w3.eth.send_raw_transaction(raw))
        except RpcUnavailable as exc:
            log.warning("nonce %d of %s may not have been sent (%s); will resend", tx.nonce, tx.sender, exc)
        except Web3RPCError as exc:
            await self._on_refused(tx, str(exc), quiet)

    async def _with_receipt(self, tx: StoredTx, slot: tuple[str, int], *, quiet: bool) -> None:
        try:
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
                await self._on_refused(tx, exc.message, quiet)
            return
        finally:
            self._waiting[slot] -= 1
            if self._waiting[slot] <= 0:
                del self._waiting[slot]
        self._sync = True
        self._on_receipt(tx, delivery.receipt_from_json(answer))
