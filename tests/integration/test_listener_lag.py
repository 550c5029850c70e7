"""The listener's lag on a real anvil with `confirmations = 2`: 0 once it has handed on everything up to the confirmed
head (head - confirmations), over HTTP polling and over a WebSocket; the blocks it still has to read when behind."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.chain.contracts import CoordinatorAbi
from node.chain.heads import Head
from node.chain.listener import Listener
from node.chain.rpc import RpcPool
from node.devnet import Devnet
from node.jobs.store import JobStore

CONFIRMATIONS = 2


@pytest.fixture(scope="module")
def dev(contracts_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with Devnet(tmp_path_factory.mktemp("lag")) as dev:
        dev.start_anvil()
        dev.deploy()
        yield dev


class WatchedStore(JobStore):
    """The store, with an event set whenever the listener commits a range (its cursor moves)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.changed = asyncio.Event()

    def record_requests(self, *args: Any, **kwargs: Any) -> Any:
        """`JobStore.record_requests`, then the event set."""
        jobs = super().record_requests(*args, **kwargs)
        self.changed.set()
        return jobs


def make_listener(dev: Devnet, store: WatchedStore, rpc: RpcPool, ws_url: str | None) -> Listener:
    assert dev.deployment is not None
    return Listener(
        rpc,
        ws_url,
        dev.deployment.coordinator.address,
        CoordinatorAbi.from_artifacts(),
        store,
        start_block=dev.deployment.start_block,
        confirmations=CONFIRMATIONS,
        poll_interval_s=0.05,
        models={},
        on_jobs=lambda jobs: None,
        on_head=lambda head: store.changed.set(),  # a new head: the lag may change
        log_reconcile_s=0.5,
    )


async def until(check: Callable[[], bool], changed: asyncio.Event, timeout_s: float = 30) -> None:
    """Waits until `check()` is true, looking again each time the listener's state `changed` (a head, a committed
    range); fails after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while True:
            changed.clear()  # before the look: a change after it wakes the wait below
            if check():
                return
            await changed.wait()


@pytest.mark.parametrize("over", ["http", "ws"])
def test_lag_is_zero_at_the_confirmed_head_and_counts_the_blocks_behind(dev: Devnet, tmp_path: Path, over: str) -> None:
    async def run() -> None:
        assert dev.deployment is not None
        store = WatchedStore(tmp_path / "jobs.db", chain_id=31337, coordinator=dev.deployment.coordinator.address)
        rpc = RpcPool([dev.rpc_url])
        lst = make_listener(dev, store, rpc, dev.ws_url if over == "ws" else None)
        task = asyncio.create_task(lst.run())
        try:
            for _ in range(4):  # each new head: caught up means lag 0, not `confirmations`
                dev.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
                chain_head = dev.w3.eth.block_number
                await until(
                    lambda h=chain_head: lst.head is not None and lst.head.number == h and lst.lag_blocks == 0,
                    store.changed,
                )
                handed_on = max(lst.cursor - 1, lst._live_to)
                assert handed_on == chain_head - CONFIRMATIONS  # everything up to the confirmed head, no further
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # Stopped; 5 blocks later a listener on the same store has (at least) those 5 to read: exactly 5 over HTTP,
        # whose cursor moved with every head; more over a WebSocket, whose live blocks since the last read back are
        # read again.
        for _ in range(5):
            dev.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        behind = make_listener(dev, store, rpc, None)
        block = dev.w3.eth.get_block("latest")
        behind.head = Head(int(block["number"]), "0x" + bytes(block["hash"]).hex(), "0x", 0, int(block["timestamp"]))
        assert behind.lag_blocks == block["number"] - CONFIRMATIONS - (behind.cursor - 1)
        assert behind.lag_blocks == 5 if over == "http" else behind.lag_blocks >= 5
        await rpc.close()
        store.close()

    asyncio.run(run())
