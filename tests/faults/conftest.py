"""Fault injection on a real chain: anvil, the node as a process, a container, and a TCP proxy between them.

The node reaches anvil (HTTP and WebSocket) only through `proxy`, so a test can cut the RPC; the test itself talks
to anvil directly. The container is the suite's `faulty_container` (echo with switchable faults and a journal of
every computation), so tests can count what was computed across node crashes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eth_utils.crypto import keccak

from node.devnet import Devnet, Proc, _http_ok, free_port, wait_until
from tests.proxy import TcpProxy

MODEL = "echo/faulty@1"


def read_store(config: Path | None, url: str | None, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of `sql` (`?` parameters) from a node's store, read-only while it runs: the PostgreSQL database at `url`,
    else the SQLite file beside its `config` (`<name>.db`)."""
    if url is not None:
        with psycopg.connect(url, autocommit=True) as pg:
            return [tuple(r) for r in pg.execute(sql.replace("?", "%s"), args).fetchall()]  # type: ignore[arg-type]
    assert config is not None
    with sqlite3.connect(f"file:{config.with_suffix('.db')}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql, args).fetchall()


@dataclass
class FaultRig:
    dev: Devnet
    proxy: TcpProxy
    journal: Path
    container_url: str
    container: Proc | None = None
    node: Proc | None = None
    config: Path | None = None
    restarts: int = 0
    env: dict[str, str] = field(default_factory=dict)
    #: The PostgreSQL store the node uses instead of its SQLite file (the suite runs once per backend).
    store_url: str | None = None

    # ------------------------------------------------------------------------------------------ processes

    def start_container(self) -> None:
        port, j = int(self.container_url.rsplit(":", 1)[1]), self.journal
        self.container = self.dev.start(
            "container",
            [sys.executable, "-m", "tests.faults.faulty_container", "--port", str(port), "--journal", str(j)],
        )
        wait_until(
            lambda: _http_ok(self.container_url + "/health"),
            timeout_s=30,
            what="the faulty container",
            alive=self.container.check_alive,
        )

    def configure(self, *, ws: bool = True, **chain: Any) -> Path:
        """Writes the node's config: the faulty container as `MODEL`, the RPC through the proxy (over WebSocket, or
        HTTP polling only with `ws=False`), `chain` as extra [chain] keys."""
        model = {"url": self.container_url, "timeout_s": chain.pop("timeout_s", 10), "max_concurrency": 8}
        model.update(chain.pop("model", {}))
        self.config = self.dev.write_node_config(
            {MODEL: model},
            rpc_url=self.proxy.url,
            ws_url=self.proxy.url.replace("http://", "ws://") if ws else "",
            **chain,
        )
        return self.config

    def start_node(self) -> Proc:
        assert self.config is not None
        log_path = self.dev.workdir / "node.log"
        listening = ("listening to", "over HTTP every")  # over a WebSocket, or polling

        def said() -> int:
            text = log_path.read_text() if log_path.exists() else ""
            return sum(text.count(words) for words in listening)

        before = said()
        self.node = self.dev.start_node(self.config, env=self.env)
        wait_until(
            lambda: said() > before,
            timeout_s=60,
            what="the node to listen",
            alive=self.node.check_alive,
        )
        return self.node

    def start_node_to_die(self, point: str, timeout_s: float = 60) -> None:
        """Starts the node with the fault-injection `point` armed (`node.faultpoint`) and waits for it to kill itself
        there (SIGKILL); raises if it exits any other way or never reaches the point."""
        assert self.config is not None
        node = self.dev.start_node(self.config, env={**self.env, "INFERA_FAULT_POINT": point})
        wait_until(lambda: node.popen.poll() is not None, timeout_s=timeout_s, what=f"the node to die at {point}")
        self.dev.procs.remove(node)
        assert node.popen.returncode == -signal.SIGKILL, f"the node exited with {node.popen.returncode}, not at {point}"
        self.restarts += 1

    def kill_node(self) -> None:
        """SIGKILL: no cleanup, no flush beyond what the node already committed."""
        assert self.node is not None
        os.killpg(self.node.popen.pid, signal.SIGKILL)
        self.node.popen.wait()
        self.dev.procs.remove(self.node)
        self.restarts += 1

    def control(self, action: str) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.container_url}/{action}", method="POST"), timeout=5)

    # ----------------------------------------------------------------------------------------------- state

    def db(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Reads the node's store (read-only, while it runs): its SQLite file, or its PostgreSQL database."""
        return read_store(self.config, self.store_url, sql, *args)

    def write_db(self, sql: str, *args: Any) -> None:
        """Changes the node's store behind its back (while it is stopped): what an operator's SQL would do."""
        assert self.config is not None
        if self.store_url is not None:
            with psycopg.connect(self.store_url, autocommit=True) as pg:
                pg.execute(sql.replace("?", "%s"), args)  # type: ignore[arg-type]
            return
        with sqlite3.connect(self.config.with_suffix(".db")) as db:
            db.execute(sql, args)

    def states(self) -> Counter[str]:
        return Counter({state: n for state, n in self.db("SELECT state, COUNT(*) FROM jobs GROUP BY state")})

    def computed(self) -> Counter[bytes]:
        """How many times the container computed each input (from its journal)."""
        if not self.journal.exists():
            return Counter()
        return Counter(bytes.fromhex(line) for line in self.journal.read_text().split())

    def wait_states(self, what: str, timeout_s: float = 60, **expected: int) -> None:
        """Waits until the store holds at least `expected` jobs in each named state."""

        def reached() -> bool:
            states = self.states()
            return all(states[s] >= n for s, n in expected.items())

        alive = self.node.check_alive if self.node and self.node.popen.poll() is None else None
        wait_until(reached, timeout_s=timeout_s, what=f"{what} ({expected})", interval_s=0.05, alive=alive)

    def fulfillments(self) -> Counter[int]:
        """RequestFulfilled events by request id, over the whole chain (raw logs: fast on thousands)."""
        dep = self.dev.deployment
        assert dep is not None
        topic = "0x" + keccak(text="RequestFulfilled(uint256,address,bytes32,bool,uint256)").hex()
        logs = self.dev.w3.eth.get_logs(
            {"address": dep.coordinator.address, "topics": [topic], "fromBlock": dep.start_block}  # type: ignore[typeddict-item]
        )
        return Counter(int.from_bytes(bytes(raw["topics"][1]), "big") for raw in logs)

    def wait_fulfilled(self, ids: list[int], timeout_s: float = 90) -> None:
        alive = self.node.check_alive if self.node else None
        wait_until(
            lambda: all(self.fulfillments()[i] >= 1 for i in ids),
            timeout_s=timeout_s,
            what=f"{len(ids)} requests fulfilled",
            interval_s=0.2,
            alive=alive,
        )

    def node_txs(self, address: str) -> list[dict[str, Any]]:
        """Every transaction `address` sent, with its receipt status, in chain order."""
        w3 = self.dev.w3
        found = []
        for number in range(self.dev.deployment.start_block, w3.eth.block_number + 1):  # type: ignore[union-attr]
            block = w3.eth.get_block(number, full_transactions=True)
            for tx in block["transactions"]:
                if tx["from"].lower() == address.lower():  # type: ignore[index]
                    receipt = w3.eth.get_transaction_receipt(tx["hash"])  # type: ignore[index]
                    found.append({**tx, "status": receipt["status"]})  # type: ignore[dict-item]
        return found


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    """`GET /readyz` of the node's API on `port`: (HTTP status, its JSON body), 503 included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def output_hash(data: bytes) -> bytes:
    return keccak(data)


@contextlib.contextmanager
def fault_rig(tmp_path: Path, store_url: str | None) -> Iterator[FaultRig]:
    """anvil with the contracts, the proxy, the faulty container, and the node's store (`store_url`: a PostgreSQL
    database instead of the node's SQLite file)."""
    with Devnet(tmp_path) as dev:
        if store_url is not None:  # every node config the test writes uses it
            dev.store_defaults = {"url": store_url, "lease_ttl_s": 3}
        dev.start_anvil()
        dev.deploy()
        proxy = TcpProxy(dev.rpc_port)
        rig = FaultRig(dev, proxy, tmp_path / "journal.txt", f"http://127.0.0.1:{free_port()}", store_url=store_url)
        try:
            rig.start_container()
            yield rig
        finally:
            proxy.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def rig(contracts_built: None, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FaultRig]:
    """`fault_rig`, once per store: an SQLite file, then a new database on the session's PostgreSQL cluster (one
    suite, both stores)."""
    store_url = request.getfixturevalue("postgres").new_database() if request.param == "postgresql" else None
    with fault_rig(tmp_path, store_url) as rig:
        yield rig
