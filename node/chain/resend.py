"""Replacement and resending of the node's unmined transactions, and giving one up without leaving its nonce empty.

Guarantees:
- A transaction unmined after `bump_after_blocks` blocks *and* `BUMP_MIN_AGE_S` seconds is re-signed at its nonce
  with fees raised by `bump_percent`, never above the cap; at the cap it is rebroadcast as it is (which also resends
  one the mempool dropped). Jobs orphaned meanwhile are dropped from it; one left with nothing to carry becomes a
  0-value transfer to self, so its nonce is still filled.
- A pending transaction is handed to the RPC again, as it is, `REBROADCAST_AFTER_S` after it was last sent, blocks or
  no blocks.
- A transaction given up (`abandon`) hands its jobs back (`computed` again, for the caller to requeue) and its nonce
  is accounted for: filled with a 0-value transfer when a later nonce of the key is open (the later ones would wait
  for it for ever), otherwise reused by the key's next send, or left to the transaction that took it; the counter is
  resynced with the chain, never below the key's own open transactions (`Nonces.resync_after`).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from node.chain import build, delivery
from node.chain.broadcast import Broadcaster
from node.chain.env import TxBooks, TxEnv
from node.chain.keys import Key
from node.chain.nonces import Nonces
from node.jobs.states import JobState
from node.jobs.store import Job, StoredTx

log = logging.getLogger(__name__)

#: A transaction is replaced only when it is `bump_after_blocks` behind *and* this old: on a devnet that mines a block
#: per transaction (or a chain with sub-second blocks), blocks pass faster than a busy RPC answers.
BUMP_MIN_AGE_S = 3.0
#: A pending transaction is handed to the RPC again (as it is) this long after it was last (re)sent, blocks or no
#: blocks: a send lost on the way (a 502 that was the gateway's, a dropped connection) holds every later nonce of the
#: key, and a chain that mines only when there are transactions (a devnet) makes no blocks to count.
REBROADCAST_AFTER_S = 10.0


class Resender:
    """Bumps, rebroadcasts, fills and gives up the node's open transactions."""

    def __init__(self, env: TxEnv, books: TxBooks, nonces: Nonces, broadcaster: Broadcaster) -> None:
        self._env = env
        self._books = books
        self._nonces = nonces
        self._broadcaster = broadcaster
        #: Transactions re-signed with raised fees, for metrics.
        self.replaced = 0

    def stale(self, tx: StoredTx) -> bool:
        """Whether pending `tx` is due for a replacement: `bump_after_blocks` behind and `BUMP_MIN_AGE_S` old."""
        return (
            self._env.view.head_number - tx.sent_block >= self._env.policy.bump_after_blocks
            and time.monotonic() - self._books.ledger.sent_at(tx) >= BUMP_MIN_AGE_S
        )

    async def unmined(self, tx: StoredTx, *, stale: bool) -> None:
        """Pending `tx` has no receipt: replaced when `stale`, rebroadcast when it was last sent long ago."""
        if stale:
            await self.replace(tx)
        elif time.monotonic() - self._books.ledger.sent_at(tx) >= REBROADCAST_AFTER_S:
            self._books.ledger.touch(tx)
            await self._broadcaster.send(tx, quiet=True)

    async def replace(self, tx: StoredTx) -> None:
        """Re-signs an unmined transaction at the same nonce with higher fees (or rebroadcasts it at the cap)."""
        key = self._books.keys.get(tx.sender)
        request, raised = build.bumped(tx.request, self._env.view.base_fee_wei, self._env.policy)
        old_max = int(tx.request["maxFeePerGas"])
        live = [
            j
            for rid, _ in tx.items
            if (j := self._books.ledger.carried(rid)) is not None and j.state is JobState.SUBMITTED
        ]
        waited = self._env.view.head_number - tx.sent_block
        tx.sent_block = self._env.view.head_number
        self._books.ledger.touch(tx)
        if not raised and len(live) == len(tx.items):
            log.warning(
                "nonce %d of %s unmined after %d blocks and its fee is at the cap (%d wei): rebroadcasting",
                tx.nonce,
                tx.sender,
                waited,
                old_max,
            )
            self._env.store.update_tx(tx)
            await self._broadcaster.send(tx, quiet=True)
            return
        if len(live) != len(tx.items):
            if live:
                request = build.recarried(request, delivery.calldata(self._env.abi, live, self._env.manager))
            else:  # nothing left to carry (a reorg orphaned it): fill the nonce with a 0-value transfer to self
                request = build.emptied(request, tx.sender)
        items = [(j.request_id, j.failure is not None) for j in live] if len(live) != len(tx.items) else tx.items
        self._commit_re_signed(tx, key, request, items)  # one carrying nothing: its hash goes to `call_hashes`
        for job in live:
            self._env.store.update(job, JobState.SUBMITTED, tx_hash=tx.hashes[-1])
        self.replaced += 1
        log.warning(
            "nonce %d of %s unmined after %d blocks: replaced with maxFeePerGas %d (was %d), tx %s",
            tx.nonce,
            tx.sender,
            waited,
            int(request["maxFeePerGas"]),
            old_max,
            tx.hashes[-1],
        )
        await self._broadcaster.send(tx, quiet=True)

    async def abandon(self, tx: StoredTx, reason: str, *, taken: bool = False) -> list[Job]:
        """Gives up a signed transaction that will not be mined as it is; returns its jobs, `computed` again, for the
        caller to send again. `taken`: another transaction holds the nonce already, so `tx` is just dropped.
        Otherwise its nonce is filled when a later nonce of the key is open, or reused by the key's next send."""
        key = self._books.keys.get(tx.sender)
        carried = (self._books.ledger.drop(rid) or self._env.store.get(rid) for rid, _ in tx.items)
        jobs = [j for j in carried if j is not None]
        for job in jobs:
            if job.state is JobState.SUBMITTED:
                self._env.store.update(job, JobState.COMPUTED, tx_hash=None, nonce=None)
        jobs = [j for j in jobs if j.state is JobState.COMPUTED]
        async with self._nonces.lock(key):
            if self._books.ledger.has_later(tx) and not taken:
                self._fill(tx, key, reason)
            else:
                tx.state = "failed"
                self._env.store.update_tx(tx)
                self._books.ledger.close(tx)
                await self._nonces.resync_after(key, tx.nonce, reason, taken=taken)
        return jobs

    def _commit_re_signed(self, tx: StoredTx, key: Key, request: dict[str, Any], items: list[tuple[int, bool]]) -> None:
        """Re-signs `tx` as `request` carrying `items` and commits it; the tracked `tx` changes only once the store
        has it, so a failed write (the store gone, the lease lost) never leaves a signed transaction that only this
        process knows, to be rebroadcast later."""
        signed = copy.deepcopy(tx)
        build.re_sign(key.account, signed, request)
        signed.items = items
        self._env.store.update_tx(signed)
        tx.hashes, tx.raw, tx.request, tx.items = signed.hashes, signed.raw, signed.request, signed.items

    def _fill(self, tx: StoredTx, key: Key, reason: str) -> None:
        """Re-signs `tx` as a 0-value transfer to self at the same nonce (fees raised as for a replacement), so the
        key's later transactions are not held behind a nonce that nothing fills. It stays tracked."""
        request, _ = build.bumped(tx.request, self._env.view.base_fee_wei, self._env.policy)
        self._commit_re_signed(tx, key, build.emptied(request, tx.sender), [])  # its hashes to `call_hashes`
        self._books.ledger.clear_refusals(tx)  # a new payload: its own refusals count
        self._books.ledger.touch(tx, at=0.0)  # the tracker rebroadcasts it at its next check
        log.warning(
            "nonce %d of %s filled with a 0-value transfer (%s): a later nonce is open", tx.nonce, tx.sender, reason
        )
