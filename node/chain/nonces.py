"""Nonce allocation: one counter per key, taken from the chain at start and again whenever the chain disagrees.

Guarantees:
- At start a key's next nonce is the chain's pending count, or one past the key's newest stored open transaction
  when that is higher (a restart resends those at their own nonces).
- A nonce is handed out under the key's lock and advanced only once the transaction signed at it is committed
  (`used`): two transactions never share a nonce and none is skipped.
- A pending count past the key's next nonce (transactions this node did not sign, or a wrong answer) is asked again
  and believed only when repeated: a single wrong count would open a gap holding every later transaction for ever.
- After "nonce too low" or a given-up transaction the counter is resynced from the chain, never below the key's own
  open transactions (their nonces are spoken for). A resync that fails is done again before the key's next send.
- A given-up nonce that is the key's newest is reused by its next send; one below an open nonce is filled with a
  0-value transfer instead (`node.chain.resend`), never left empty.
"""

from __future__ import annotations

import asyncio
import logging

from node.chain.keys import Key
from node.chain.ledger import OpenTxs
from node.chain.rpc import RpcPool
from node.errors import Action
from node.jobs.store import StoredTx
from node.observability.conditions import CONDITIONS

log = logging.getLogger(__name__)


class Nonces:
    """The next nonce of each key, its lock, and whether it must be resynced before the next send."""

    def __init__(self, rpc: RpcPool, ledger: OpenTxs) -> None:
        self._rpc = rpc
        self._ledger = ledger
        self._next: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: Keys whose last resync failed: the next send resyncs first.
        self._resync: set[str] = set()

    def lock(self, key: Key) -> asyncio.Lock:
        """The key's lock: held from handing out a nonce until the transaction signed at it is committed."""
        return self._locks.setdefault(key.address.lower(), asyncio.Lock())

    def next(self, key: Key) -> int:
        """The nonce the key's next new transaction gets."""
        return self._next.get(key.address.lower(), 0)

    async def pending(self, key: Key) -> int:
        """The key's pending transaction count. A count past the key's next nonce is asked for again and believed
        only when repeated. Raises ValueError when the two answers differ."""

        async def count() -> int:
            return int(
                await self._rpc.call(
                    "eth_getTransactionCount", lambda w3: w3.eth.get_transaction_count(key.address, "pending")
                )
            )

        first = await count()
        if first > self.next(key):
            again = await count()
            if again != first:
                CONDITIONS.count("rpc", Action.UNKNOWN)
                raise ValueError(f"pending transaction count of {key.address} answered {first}, then {again}")
        return first

    async def sync(self, key: Key, stored: list[StoredTx]) -> int:
        """Sets the key's next nonce from the chain and its `stored` open transactions (at start); returns it."""
        chain_next = await self.pending(key)
        self._next[key.address.lower()] = max([chain_next] + [t.nonce + 1 for t in stored])
        return self.next(key)

    async def reserve(self, key: Key) -> int:
        """Under `lock(key)`: the nonce to sign the key's next transaction at, resynced first if the last resync
        failed (the chain's count, never below the key's own open transactions)."""
        address = key.address.lower()
        if address in self._resync:
            chain_next = await self.pending(key)
            self._next[address] = max(self.next(key), chain_next, self._ledger.top_nonce(address) + 1)
            self._resync.discard(address)
        return self.next(key)

    def used(self, key: Key, nonce: int) -> None:
        """Under `lock(key)`: the transaction signed at `nonce` is committed; the next one gets `nonce + 1`."""
        self._next[key.address.lower()] = nonce + 1

    async def resync_after(self, key: Key, nonce: int, reason: str, *, taken: bool) -> None:
        """Under `lock(key)`, once the transaction at `nonce` was closed: its nonce is free again (reused by the next
        send), or `taken` by a transaction that is none of ours (the chain's count wins, even downwards). Either way
        the counter is resynced with the chain, never below the key's own open transactions; when the chain does not
        answer, the next send resyncs first."""
        address = key.address.lower()
        if not taken:
            self._next[address] = min(self.next(key), nonce)
        try:
            chain_next = await self.pending(key)
        except Exception as exc:  # the jobs must not be lost meanwhile; the next send resyncs first
            self._resync.add(address)
            log.warning("sender %s: nonce resync failed (%s); retried before the next send", key.address, exc)
            return
        ours = self.next(key) if not taken else 0
        self._next[address] = max(ours, chain_next, self._ledger.top_nonce(address) + 1)
        log.info("sender %s: next nonce %d (%s)", key.address, self.next(key), reason)
