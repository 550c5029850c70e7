"""The operator's transaction settings, read once from the config and handed to every unit of the transaction layer
(`node.chain.tx` composes them). A frozen value: no unit changes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TxPolicy:
    """The operator's transaction settings: fee cap and tip (wei), replacement, confirmations, batching, in-flight and
    send ceilings, retry window (s)."""

    max_fee_per_gas_wei: int
    priority_fee_wei: int
    bump_percent: int = 20
    bump_after_blocks: int = 3
    confirmations: int = 0
    max_batch: int = 32
    max_pending_per_key: int = 64
    retry_window_s: float = 600.0
    receipt_poll_s: float = 1.0
    max_concurrent_sends: int = 4
    #: Ceilings on what one key hands to the RPC (new transactions, replacements and rebroadcasts alike).
    max_sends_per_s: float = 100.0
    max_sends_per_block: int = 256
