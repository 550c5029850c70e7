"""The node's open transactions (signed, not yet final), in memory, with what is known of each.

Guarantees:
- One entry per (sender, nonce): the transaction, when it was last (re)signed or resent, its receipt once mined, the
  refusals of its sends, and the waiter of a `send_call`. Each open transaction holds a slot of its key (`KeyPool`).
- `close` is the one way out: it frees the key's slot, hands a `send_call` waiter the receipt (or fails it: the
  transaction was abandoned) and forgets the slot, so a later transaction at the same nonce starts afresh.
- The jobs carried by open transactions are kept by request id until they settle or go back to the queue.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from node.chain.keys import KeyPool
from node.jobs.store import Job, StoredTx

#: An open transaction's place: (sender in lower case, nonce).
Slot = tuple[str, int]


def slot_of(tx: StoredTx) -> Slot:
    """A transaction's slot: (sender lower-cased, nonce)."""
    return tx.sender.lower(), tx.nonce


@dataclass
class _Entry:
    tx: StoredTx
    #: monotonic time the transaction was last (re)signed or resent (0: never, in this process).
    sent_at: float
    receipt: Any = None
    #: Refusals of its sends, and the monotonic time of the first.
    refusals: int = 0
    first_refusal: float = 0.0
    waiter: asyncio.Future[Any] | None = None


class OpenTxs:
    """Open transactions by (sender, nonce), and the jobs they carry by request id."""

    def __init__(self, keys: KeyPool) -> None:
        self._keys = keys
        self._entries: dict[Slot, _Entry] = {}
        self._carried: dict[int, Job] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def all(self) -> list[StoredTx]:
        """The open transactions now (a copy: checks may close some meanwhile)."""
        return [e.tx for e in self._entries.values()]

    # ----------------------------------------------------------------------------------------------- in and out

    def open(self, tx: StoredTx, *, resumed: bool = False) -> None:
        """Tracks `tx` (`resumed`: loaded from the store after a restart, so never sent by this process)."""
        self._entries[slot_of(tx)] = _Entry(tx, 0.0 if resumed else time.monotonic())
        self._keys.opened(tx.sender)

    def close(self, tx: StoredTx, receipt: Any = None) -> None:
        """Stops tracking `tx`'s slot: with its `receipt` it was confirmed, without it was given up."""
        entry = self._entries.pop(slot_of(tx), None)
        if entry is None:
            return
        self._keys.closed(tx.sender)
        if entry.waiter is not None and not entry.waiter.done():
            if receipt is not None:
                entry.waiter.set_result(receipt)
            else:
                entry.waiter.set_exception(RuntimeError(f"transaction {tx.hashes[-1]} was abandoned ({tx.state})"))

    def waiter(self, tx: StoredTx) -> asyncio.Future[Any]:
        """A future of `tx`'s receipt once it is confirmed (it fails if `tx` is abandoned). `tx` must be open."""
        entry = self._entries[slot_of(tx)]
        if entry.waiter is None:
            entry.waiter = asyncio.get_running_loop().create_future()
        return entry.waiter

    # --------------------------------------------------------------------------------------------------- reads

    def is_open(self, tx: StoredTx) -> bool:
        """Whether `tx` itself (not another transaction at its nonce) is tracked."""
        entry = self._entries.get(slot_of(tx))
        return entry is not None and entry.tx is tx

    def holds(self, sender: str, nonce: int) -> bool:
        return (sender.lower(), nonce) in self._entries

    def any_pending(self) -> bool:
        """Whether a transaction of the node is unmined."""
        return any(e.tx.state == "pending" for e in self._entries.values())

    def top_nonce(self, sender: str) -> int:
        """The highest nonce of `sender` with an open transaction (-1: none)."""
        address = sender.lower()
        return max((n for a, n in self._entries if a == address), default=-1)

    def has_later(self, tx: StoredTx) -> bool:
        """Whether a later nonce of `tx`'s sender is open (it waits for `tx`'s nonce to be filled)."""
        return self.top_nonce(tx.sender) > tx.nonce

    # ---------------------------------------------------------------------------------------- per-slot facts

    def sent_at(self, tx: StoredTx) -> float:
        entry = self._entries.get(slot_of(tx))
        return entry.sent_at if entry is not None else 0.0

    def touch(self, tx: StoredTx, at: float | None = None) -> None:
        """Records that `tx` was (re)sent now (or at `at`; 0: "long ago", so the tracker resends it next)."""
        entry = self._entries.get(slot_of(tx))
        if entry is not None:
            entry.sent_at = time.monotonic() if at is None else at

    def receipt(self, tx: StoredTx) -> Any:
        entry = self._entries.get(slot_of(tx))
        return entry.receipt if entry is not None else None

    def set_receipt(self, tx: StoredTx, receipt: Any) -> None:
        """Keeps `tx`'s receipt until it is deep enough (None: forget it, a reorg removed its block)."""
        entry = self._entries.get(slot_of(tx))
        if entry is not None:
            entry.receipt = receipt

    def count_refusal(self, tx: StoredTx, now: float) -> tuple[int, float]:
        """Counts one more refusal of `tx`'s sends (at monotonic time `now`); returns the refusals and the time of
        the first."""
        entry = self._entries.get(slot_of(tx))
        if entry is None:
            return 1, now
        if entry.refusals == 0:
            entry.first_refusal = now
        entry.refusals += 1
        return entry.refusals, entry.first_refusal

    def clear_refusals(self, tx: StoredTx) -> None:
        """`tx` carries something new (a fill) or was acted on: its refusals count afresh."""
        entry = self._entries.get(slot_of(tx))
        if entry is not None:
            entry.refusals, entry.first_refusal = 0, 0.0

    # ---------------------------------------------------------------------------------------------- carried

    def carry(self, jobs: list[Job]) -> None:
        """`jobs` are carried by an open transaction (they are `submitted`)."""
        for job in jobs:
            self._carried[job.request_id] = job

    def carried(self, request_id: int) -> Job | None:
        return self._carried.get(request_id)

    def drop(self, request_id: int) -> Job | None:
        """Forgets (and returns) the job of `request_id`: it settled or goes back to the queue."""
        return self._carried.pop(request_id, None)
