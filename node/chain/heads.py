"""What the listener reads from the chain, checked before it is believed: heads, log answers, refusals, block time.

Pure functions and small value types, no I/O: `node.chain.listener` does the calls and keeps the state. A head whose
fields are past any real chain's, an `eth_getLogs` answer with a log outside the asked range, a refusal's words:
each is judged here, once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState
from tenacity.wait import wait_exponential_jitter

from node.chain.contracts import as_int
from node.chain.rpc import RpcError, is_transport_error
from node.errors import Action, EndpointFailed, RpcUnavailable

log = logging.getLogger("node.chain.listener")

#: A WebSocket is stale after this many block times without a new head (and the chain moved on).
STALE_HEAD_BLOCKS = 5.0
#: Weight of the newest interval in the block time estimate (an exponential moving average).
BLOCK_TIME_WEIGHT = 0.2
MAX_LOG_RANGE = 5_000
#: After a range refusal, ranges stay at most half the refused one for this long (seconds), then may grow again.
RANGE_LIMIT_TTL_S = 300.0
#: eth_getLogs refused for a rate limit: retried this many times in all, waiting the endpoint's Retry-After or an
#: exponential back-off between these bounds (seconds), before the failure goes to the outer loop's back-off.
RATE_LIMIT_ATTEMPTS = 8
RATE_LIMIT_BASE_S = 0.25
RATE_LIMIT_MAX_S = 5.0
#: Shortest wait after a rate limit, even when the endpoint says `Retry-After: 0` (no hot loop).
RATE_LIMIT_MIN_S = 0.05


@dataclass(frozen=True)
class Head:
    """A block header as the node uses it: number, hashes, base fee (wei), timestamp (unix s) and gas limit."""

    number: int
    hash: str
    parent_hash: str
    base_fee_wei: int
    timestamp: int
    #: The block's gas limit (0 when the block did not say): what one transaction can use at most.
    gas_limit: int = 0


class Refusal(enum.Enum):
    """Why eth_getLogs failed, as far as the listener acts on it."""

    RATE_LIMITED = "rate_limited"  # the same call later
    RANGE = "range"  # a smaller range now
    OTHER = "other"  # not the range's fault: up to the caller's back-off


_RATE_WORDS = ("rate limit", "rate-limit", "ratelimit", "too many requests", "request rate", "throttl", "http 429")
_RANGE_WORDS = ("range", "more than", "results", "response size", "too large", "too wide", "too big", "too many logs")


def log_refusal(exc: BaseException) -> Refusal:
    """Classifies a failed `eth_getLogs`: a rate limit (HTTP 429, JSON-RPC code 429/-32005 without range words, rate
    limit words), a refusal of the range (an error answer naming a range or result limit, or any other error answer:
    the old split-on-refusal behaviour), or other (a transport failure, every endpoint down, a non-JSON answer)."""
    text = str(exc).lower()
    status = getattr(exc, "status", None)
    if status == 429 or any(w in text for w in _RATE_WORDS):
        return Refusal.RATE_LIMITED
    if isinstance(exc, RpcError):
        if any(w in text for w in _RANGE_WORDS):
            return Refusal.RANGE
        if exc.code in (429, -32005) or "limit exceeded" in text:
            return Refusal.RATE_LIMITED
        return Refusal.RANGE
    return Refusal.OTHER


def action_of(exc: BaseException) -> Action:
    """The `Action` class of a failed WebSocket call or stream, for the counts under source "ws"."""
    if isinstance(exc, RpcError):
        refusal = log_refusal(exc)
        return Action.RETRY if refusal is Refusal.RATE_LIMITED else Action.REFUSED
    if isinstance(exc, ConnectionError | RpcUnavailable | WsStale) or is_transport_error(exc):
        return Action.UNHEALTHY
    return Action.UNKNOWN


def rate_limit_wait(state: RetryCallState) -> float:
    """Seconds before retrying a rate-limited call: the endpoint's Retry-After if it gave one, else exponential."""
    exc = state.outcome.exception() if state.outcome is not None else None
    after = getattr(exc, "retry_after_s", None)
    if isinstance(after, int | float) and after >= 0:
        return max(RATE_LIMIT_MIN_S, min(float(after), 60.0))
    return max(RATE_LIMIT_MIN_S, wait_exponential_jitter(multiplier=RATE_LIMIT_BASE_S, max=RATE_LIMIT_MAX_S)(state))


class WsStale(EndpointFailed, ConnectionError):
    """The WebSocket still answers (or seems open) but sends no new heads while the chain moves on."""


class BlockTime:
    """The chain's block time, estimated from the heads seen (their timestamps), and the staleness bound from it."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self.min_s = min_s
        self.max_s = max_s
        #: Seconds per block (None until two heads were seen).
        self.estimate_s: float | None = None
        self._last: tuple[int, int] | None = None

    def observe(self, number: int, timestamp: int) -> None:
        """A head (`number`, `timestamp` in seconds). Heads out of order or repeated are ignored."""
        if self._last is not None and number > self._last[0]:
            per_block = max(0.0, (timestamp - self._last[1]) / (number - self._last[0]))
            if self.estimate_s is None:
                self.estimate_s = per_block
            else:
                self.estimate_s += BLOCK_TIME_WEIGHT * (per_block - self.estimate_s)
        if self._last is None or number > self._last[0]:
            self._last = (number, timestamp)

    def stale_after_s(self) -> float:
        """Seconds without a new head after which a WebSocket is suspect: `STALE_HEAD_BLOCKS` block times, clamped
        to [min_s, max_s] (max_s when the block time is unknown; max_s wins when min_s > max_s)."""
        if self.estimate_s is None:
            return self.max_s
        return min(self.max_s, max(self.min_s, STALE_HEAD_BLOCKS * self.estimate_s))


def is_stale(ours: int | None, theirs: int | None) -> bool:
    """Whether a silent WebSocket is stale: the chain's head as asked (`theirs`, None when nobody answered) is past
    the last head the WebSocket sent (`ours`). Equal heads: the chain is idle (a devnet mining only on demand)."""
    return theirs is not None and (ours is None or theirs > ours)


def grown_range(current: int, limit: int) -> int:
    """The log range after an answered call: doubled, at most `limit` and `MAX_LOG_RANGE`."""
    return max(1, min(MAX_LOG_RANGE, limit, current * 2))


def _hex(value: Any) -> str:
    return value.lower() if isinstance(value, str) else "0x" + bytes(value).hex()


#: Bounds a head's fields must be within to be believed (a JSON-RPC answer can carry any number): past them the
#: answer is malformed, and is treated as no answer (back-off), never stored or acted on.
MAX_BLOCK_NUMBER = 2**62
MAX_TIMESTAMP = 2**40
MAX_GAS_LIMIT = 2**48
MAX_BASE_FEE_WEI = 2**128
#: A head this many blocks past the previous one (or the cursor, at start) is asked for again by number before it is
#: believed: one answer cannot move the cursor past blocks that do not exist yet.
MAX_UNVERIFIED_JUMP = 32
#: Nor can one answer move the chain's clock by more than this (seconds) unchecked.
MAX_UNVERIFIED_TIME_JUMP_S = 3600


def check_logs(logs: Any, from_block: int, to_block: int) -> None:
    """Raises ValueError unless `logs` is an `eth_getLogs` answer for [from_block, to_block]: a list of logs, each
    from a block in that range. One wrong answer is then retried (after a back-off) rather than believed: a log
    claiming another block would be dropped and the cursor moved past the real one, losing its request."""
    if not isinstance(logs, list):
        raise ValueError(f"eth_getLogs answered {type(logs).__name__}, not a list")
    for entry in logs:
        number = as_int(entry["blockNumber"]) if isinstance(entry, dict) and "blockNumber" in entry else None
        if number is None or not from_block <= number <= to_block:
            raise ValueError(f"eth_getLogs for blocks {from_block}-{to_block} answered a log of block {number}")


def as_head(block: Any) -> Head:
    """A block as web3 formats it or as JSON-RPC sends it (hex quantities). Raises ValueError (or KeyError,
    TypeError) for a block that is malformed or has a field past its bound (`MAX_BLOCK_NUMBER` …)."""
    head = Head(
        number=as_int(block["number"]),
        hash=_hex(block["hash"]),
        parent_hash=_hex(block["parentHash"]),
        base_fee_wei=as_int(block.get("baseFeePerGas") or 0),
        timestamp=as_int(block["timestamp"]),
        gas_limit=as_int(block.get("gasLimit") or 0),
    )
    if not (
        0 <= head.number < MAX_BLOCK_NUMBER
        and 0 <= head.timestamp < MAX_TIMESTAMP
        and 0 <= head.gas_limit < MAX_GAS_LIMIT
        and 0 <= head.base_fee_wei < MAX_BASE_FEE_WEI
    ):
        raise ValueError(f"a block with fields past any real chain's: {head}")
    return head


#: A raw JSON-RPC call: (method, params) -> the answer's `result` as sent (hex strings).
Call = Callable[[str, list[Any]], Awaitable[Any]]


async def read_head(call: Call, number: int | str) -> Head:
    """Block `number` (or a tag such as "latest") through `call`, checked (`as_head`). Raises ConnectionError when the
    endpoint has no such block (a node still syncing), ValueError/KeyError/TypeError for a malformed one."""
    block = await call("eth_getBlockByNumber", [hex(number) if isinstance(number, int) else number, False])
    if block is None:
        raise ConnectionError(f"the endpoint has no block {number} (a node still syncing?)")
    return as_head(block)


async def head_number(call: Call, timeout_s: float) -> int | None:
    """`eth_blockNumber` through `call` within `timeout_s` seconds, or None when it failed (any way)."""
    try:
        async with asyncio.timeout(timeout_s):
            return as_int(await call("eth_blockNumber", []))
    except Exception as exc:
        log.debug("eth_blockNumber for the staleness check failed: %s", exc)
        return None


async def find_fork(call: Call, hashes: Mapping[int, str], number: int, parent_hash: str) -> int | None:
    """The lowest block of `hashes` (number -> hash, as stored) the chain replaced, for a block `number` whose parent
    is `parent_hash`; None when every stored hash below `number` is still on the chain. Walks the stored hashes down
    while they differ from the chain's; across a gap in them (HTTP polling stores only the heads it polled) it asks the
    chain for the newest stored block below the gap, so a reorg is never missed for want of a parent hash. Raises what
    `read_head` raises."""
    fork = number if number in hashes else None  # the head's own number held another block
    n, canonical = number - 1, parent_hash
    while True:
        if n in hashes:
            if hashes[n] == canonical:
                return fork
            parent = (await read_head(call, n)).parent_hash
        else:  # a gap: the newest stored block below it must still be the chain's
            below = [m for m in hashes if m < n]
            if not below:
                return fork
            n = max(below)
            block = await read_head(call, n)
            if block.hash == hashes[n]:
                return fork
            parent = block.parent_hash
        fork, canonical, n = n, parent, n - 1
