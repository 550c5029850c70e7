"""What the transaction layer believes of the chain: the newest head, the chain's clock, the block gas limit.

Guarantees:
- One view for every unit of the transaction layer: the facade (`node.chain.tx`) feeds it each head, the units read it.
- The block gas limit batches are sized by is the largest of the last `GAS_LIMIT_HEADS` heads' limits of at least
  `MIN_PLAUSIBLE_GAS_LIMIT`: one head with a wrong (low) limit does not shrink batches or turn good outputs into
  failure reports; a wrong high one is met by the RPC's refusal (batches split).
- Deadlines are judged by the chain's clock (`ChainClock`), never by this machine's.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Coroutine
from typing import Any

from node.chain.clock import ChainClock
from node.chain.heads import Head

#: Block gas limit assumed until a block says (Ethereum mainnet's was 30-36 M in 2025).
DEFAULT_BLOCK_GAS_LIMIT = 30_000_000
#: A head's gas limit below this is not believed (no chain the node serves has blocks that small).
MIN_PLAUSIBLE_GAS_LIMIT = 1_000_000
#: Heads whose gas limits are remembered (the largest is used).
GAS_LIMIT_HEADS = 8


class ChainView:
    """The newest head, the chain's clock and the block gas limit, as the transaction layer uses them."""

    def __init__(self, clock: ChainClock | None = None) -> None:
        self.head: Head | None = None
        #: The chain's time (deadlines are judged by it, not by this machine's clock).
        self.clock = clock or ChainClock()
        #: The block gas limit batches are sized below: the largest of the last `GAS_LIMIT_HEADS` heads' limits.
        self.block_gas_limit = DEFAULT_BLOCK_GAS_LIMIT
        self._gas_limits: collections.deque[int] = collections.deque(maxlen=GAS_LIMIT_HEADS)
        self._new_head = asyncio.Event()

    @property
    def head_number(self) -> int:
        """The newest head's number (0 before any head)."""
        return self.head.number if self.head else 0

    @property
    def base_fee_wei(self) -> int:
        """The newest head's base fee (0 before any head)."""
        return self.head.base_fee_wei if self.head else 0

    def on_head(self, head: Head) -> None:
        self.head = head
        self.clock.on_head(head.timestamp, head.number)
        if head.gas_limit >= MIN_PLAUSIBLE_GAS_LIMIT:
            self._gas_limits.append(head.gas_limit)
            self.block_gas_limit = max(self._gas_limits)
        self._new_head.set()

    def next_head(self) -> Coroutine[Any, Any, bool]:
        """Awaitable that returns at the next head (from the moment of this call on)."""
        self._new_head.clear()
        return self._new_head.wait()
