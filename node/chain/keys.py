"""The node's sending keys: which one sends next, how many transactions each has in flight, which are paused.

Guarantees:
- Keys take turns (round-robin). A send reserves a slot on its key before it signs, so a key never has more than
  `max_pending_per_key` transactions open and reserved together.
- A key that cannot send (no funds, ...) pauses with a capped, growing back-off and is named on `/readyz` until one of
  its transactions is mined; the other keys go on.
- A send waiting for a key wakes when a slot frees or a pause ends, never in a hot loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress

from node.errors import short
from node.observability.conditions import CONDITIONS
from node.retry import backoff_s, wait_set

#: How long a key whose sends are refused for lack of funds (or similar) pauses, at first and at most.
KEY_PAUSE_BASE_S = 2.0
KEY_PAUSE_MAX_S = 60.0


@dataclass(frozen=True, eq=False)
class Key:
    """One sending key. What the transaction layer knows of it lives with the unit that owns that fact: its nonces
    in `node.chain.nonces.Nonces`, its slots and pauses in `KeyPool`."""

    account: LocalAccount

    @property
    def address(self) -> ChecksumAddress:
        return self.account.address


@dataclass
class _Slots:
    #: Transactions open (signed, not final) and sends under way that will take a slot once signed.
    open: int = 0
    reserved: int = 0
    #: Pauses in a row and the monotonic time the current one ends.
    pauses: int = 0
    paused_until: float = 0.0


class KeyPool:
    """Hands out keys with room for another transaction, round-robin, skipping paused ones."""

    def __init__(self, accounts: list[LocalAccount], max_pending_per_key: int) -> None:
        self.keys = [Key(a) for a in accounts]
        self._by_address = {k.address.lower(): k for k in self.keys}
        self._slots = {k.address.lower(): _Slots() for k in self.keys}
        self._max_pending = max_pending_per_key
        self._rr = 0
        self._room = asyncio.Event()

    def get(self, address: str) -> Key:
        """The key of `address` (KeyError if it is none of the node's)."""
        return self._by_address[address.lower()]

    async def acquire(self, *, only: str | None = None) -> Key:
        """The next key (or the key of address `only`) that is not paused and has room for another transaction in
        flight, with a slot reserved on it: give it back with `release`."""
        while True:
            now = time.monotonic()
            unpaused_at: float | None = None
            for i in range(len(self.keys)):
                key = self.keys[(self._rr + i) % len(self.keys)]
                if only is not None and key.address.lower() != only.lower():
                    continue
                slots = self._slots[key.address.lower()]
                if slots.paused_until > now:
                    unpaused_at = min(unpaused_at or slots.paused_until, slots.paused_until)
                    continue
                if slots.open + slots.reserved < self._max_pending:
                    self._rr = (self._rr + i + 1) % len(self.keys)
                    slots.reserved += 1
                    return key
            self._room.clear()
            timeout = None if unpaused_at is None else max(0.0, unpaused_at - now)
            await wait_set(self._room, timeout)

    def release(self, key: Key) -> None:
        """Gives back the slot `acquire` reserved (the signed transaction, if any, holds one of its own now)."""
        self._slots[key.address.lower()].reserved -= 1
        self._room.set()

    def opened(self, address: str) -> None:
        """A transaction of `address` is open: it takes a slot until `closed`."""
        self._slots[address.lower()].open += 1

    def closed(self, address: str) -> None:
        self._slots[address.lower()].open -= 1
        self._room.set()

    def next_room(self) -> Coroutine[Any, Any, bool]:
        """Awaitable that returns when a slot frees (from the moment of this call on)."""
        self._room.clear()
        return self._room.wait()

    def pause(self, key: Key, reason: str) -> None:
        """`key` cannot send (no funds, ...): it sends nothing for a capped, growing pause, and `/readyz` says why."""
        slots = self._slots[key.address.lower()]
        slots.pauses += 1
        pause = backoff_s(slots.pauses, KEY_PAUSE_BASE_S, KEY_PAUSE_MAX_S)
        slots.paused_until = time.monotonic() + pause
        CONDITIONS.set(f"key {key.address}", f"cannot send: {short(reason)} (paused {pause:.0f} s)")

    def unpause(self, address: str) -> None:
        """A transaction of this key was mined: whatever paused it is over."""
        slots = self._slots.get(address.lower())
        if slots is not None and slots.pauses:
            slots.pauses = 0
            slots.paused_until = 0.0
            CONDITIONS.set(f"key {self._by_address[address.lower()].address}", None)

    def paused(self, key: Key) -> bool:
        return self._slots[key.address.lower()].paused_until > time.monotonic()
