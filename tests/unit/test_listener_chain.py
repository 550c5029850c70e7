"""The listener's chain logic against a scripted provider (a JSON-RPC answer per call, no network): reorg rewind to
the fork, and eth_getLogs ranges split for a provider that refuses wide ones. The store is a real SQLite file."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from node.chain.contracts import CoordinatorAbi
from node.chain.heads import Head
from node.chain.listener import Listener
from node.chain.logs import LogReader
from node.chain.rpc import RpcError, RpcPool
from node.jobs.store import JobStore

COORDINATOR = to_checksum_address("0x" + "22" * 20)


def h(number: int, branch: str = "a") -> str:
    """A block hash: the block number and its branch, so a test reads which chain a hash is on."""
    return "0x" + f"{branch}{number:x}".rjust(64, "0")


def block(number: int, branch: str = "a", parent_branch: str | None = None) -> dict[str, Any]:
    return {
        "number": hex(number),
        "hash": h(number, branch),
        "parentHash": h(number - 1, parent_branch or branch),
        "timestamp": hex(1_700_000_000 + 2 * number),
        "baseFeePerGas": "0x1",
        "gasLimit": hex(30_000_000),
    }


class Chain:
    """Answers eth_getBlockByNumber from a dict of blocks by number, counting calls."""

    def __init__(self, blocks: dict[int, dict[str, Any]]) -> None:
        self.blocks = blocks
        self.calls: list[tuple[str, list[Any]]] = []

    async def __call__(self, method: str, params: list[Any]) -> Any:
        self.calls.append((method, params))
        assert method == "eth_getBlockByNumber"
        return self.blocks.get(int(params[0], 16))


def listener(store_at: str, forks: list[int]) -> tuple[Listener, JobStore]:
    store = JobStore(store_at, chain_id=31337, coordinator=COORDINATOR)
    lst = Listener(
        RpcPool(["http://127.0.0.1:9"]),  # never called: every call goes through the scripted chain
        None,
        COORDINATOR,
        CoordinatorAbi.from_artifacts(),
        store,
        start_block=1,
        confirmations=0,
        poll_interval_s=1.0,
        models={},
        on_jobs=lambda jobs: None,
        on_reorg=forks.append,
    )
    return lst, store


def test_a_reorg_rewinds_the_cursor_to_the_fork_and_forgets_the_replaced_hashes(store_at: str) -> None:
    async def run() -> None:
        forks: list[int] = []
        lst, store = listener(store_at, forks)
        old = {n: block(n) for n in range(1, 11)}
        chain = Chain(old)
        for n in range(1, 11):
            await lst._on_new_head(chain, Head(n, h(n), h(n - 1), 1, 1_700_000_000 + 2 * n, 30_000_000))
        lst.cursor = 11
        lst._save_progress()
        # Blocks 7.. are replaced by branch b (7b's parent is 6a); the new head 10b is announced.
        new = {**old, **{n: block(n, "b", "a" if n == 7 else "b") for n in range(7, 11)}}
        chain.blocks = new
        await lst._on_new_head(chain, Head(10, h(10, "b"), h(9, "b"), 1, 1_700_000_020, 30_000_000))
        assert forks == [7]
        assert lst.cursor == 7  # every log from the fork on is read again
        assert lst.reorgs == 1
        assert store.cursor(0) == 7
        kept = store.blocks()
        assert all(n < 7 for n in kept)  # no hash of the replaced branch survives
        assert kept[6] == h(6)
        # walking back asked only for the replaced blocks (9b, 8b, 7b), never the whole window
        asked = [int(p[0], 16) for _, p in chain.calls]
        assert asked == [9, 8, 7]

    asyncio.run(run())


def test_a_head_that_matches_the_stored_hashes_is_no_reorg(store_at: str) -> None:
    async def run() -> None:
        forks: list[int] = []
        lst, _ = listener(store_at, forks)
        chain = Chain({n: block(n) for n in range(1, 6)})
        for n in (1, 2, 3, 3, 4, 5, 5):  # repeated notifications
            await lst._on_new_head(chain, Head(n, h(n), h(n - 1), 1, 1_700_000_000 + 2 * n, 30_000_000))
        assert (forks, lst.reorgs, lst.head.number if lst.head else None) == ([], 0, 5)

    asyncio.run(run())


class RefusingProvider:
    """eth_getLogs that refuses any range wider than `max_range` blocks (as Alchemy, Infura and QuickNode do), and
    answers one log per block otherwise."""

    def __init__(self, max_range: int, message: str) -> None:
        self.max_range = max_range
        self.message = message
        self.ranges: list[tuple[int, int]] = []

    async def __call__(self, method: str, params: list[Any]) -> Any:
        assert method == "eth_getLogs"
        lo, hi = int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16)
        self.ranges.append((lo, hi))
        if hi - lo + 1 > self.max_range:
            raise RpcError("eth_getLogs", -32005, self.message)
        return [{"blockNumber": hex(n), "logIndex": "0x0"} for n in range(lo, hi + 1)]


def _filter(lo: int, hi: int) -> dict[str, Any]:
    return {"fromBlock": hex(lo), "toBlock": hex(hi)}


@pytest.mark.parametrize(
    "message",
    ["query returned more than 10000 results", "block range is too wide", "query exceeds max block range 2000"],
)
def test_a_refused_range_is_split_until_the_provider_answers_and_nothing_is_missed(message: str) -> None:
    async def run() -> None:
        provider = RefusingProvider(max_range=300, message=message)
        reader = LogReader(_filter)
        logs = await reader.read(provider, 1, 1000)
        assert [int(entry["blockNumber"], 16) for entry in logs] == list(range(1, 1001))  # every block, once
        answered = [(lo, hi) for lo, hi in provider.ranges if hi - lo + 1 <= 300]
        assert sorted(answered) == answered  # in order, no overlap
        assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(answered))
        assert reader.size <= 300  # the next call starts within what the provider takes
        assert len(provider.ranges) <= 12  # halving, not block by block

    asyncio.run(run())


def test_a_range_refused_even_for_one_block_is_raised_not_looped() -> None:
    async def run() -> None:
        provider = RefusingProvider(max_range=0, message="query returned more than 10000 results")
        with pytest.raises(RpcError):
            await LogReader(_filter).read(provider, 5, 8)
        assert len(provider.ranges) <= 4  # 4 blocks -> 2 -> 1 -> raised

    asyncio.run(run())
