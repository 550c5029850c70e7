"""Several node processes against one anvil devnet: the rig for redundancy and subscription tests.

Each node is a real `infera run` process with its own anvil dev account (funded by anvil, staked in the NodeRegistry
by the rig), its own config (`<name>.toml`), store (`<name>.db`), API port and log (`<name>.log`); all share one
real container, the suite's echo with a journal (tests/faults/faulty_container.py: `hold()`/`release()` park every
call so a test can kill a node while its job is in the container). The chain's time is driven by the test through
anvil, never by sleeping.

    with MultiNode.open(tmp_path) as rig:          # anvil, the contracts (SubscriptionManager too), the container
        a, b = rig.add_node("a"), rig.add_node("b")   # dev accounts 3, 4, … staked; configs written
        rig.start(a); rig.start(b)                 # each returns once the node listens
        rig.advance_to(timestamp)                  # the next block has this timestamp (mined at once)
        rig.kill(a); rig.start(a)                  # SIGKILL, then the same key, config and store again
        rig.start_to_die(a, "tx-stored")           # starts a with a fault point armed; returns once it died there
        rig.tx_count(a)                            # transactions of a's key mined since it was staked
        rig.wait(lambda: ..., "what", timeout_s=60)  # polls with a deadline; fails early if a node died

Nodes act on logs at once (`confirmations = 0`) and poll over HTTP unless `add_node(..., ws=True)`; any other
`[chain]` key can be passed to `add_node`. Dev accounts 0-2 are the devnet's (deployer, its own node, the dApp user);
the rig takes 3 and up (anvil funds 10: at most 7 rig nodes).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from node.devnet import Devnet, Proc, free_port, wait_until
from node.devnet.deployment import dev_account
from node.devnet.processes import http_ok

#: The model the rig's nodes serve, answered by the shared echo container.
MODEL = "echo/faulty@1"
#: The first anvil dev account the rig hands to a node.
FIRST_ACCOUNT = 3
LISTENING = ("listening to", "over HTTP every")  # over a WebSocket, or polling

T = TypeVar("T")


@dataclass
class RigNode:
    """One node of the rig: its key, config, API port and (while it runs) its process."""

    name: str
    account: LocalAccount
    config: Path
    api_port: int
    #: The key's nonce once staked: `MultiNode.tx_count` counts from here.
    base_nonce: int
    proc: Proc | None = None
    restarts: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.account.address)

    @property
    def store_path(self) -> Path:
        return self.config.with_suffix(".db")

    @property
    def log_path(self) -> Path:
        return self.config.with_suffix(".log")

    def db(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Reads the node's store read-only (while it runs too); [] before the node created it."""
        if not self.store_path.exists():
            return []
        with sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True, timeout=10) as db:
            return db.execute(sql, args).fetchall()

    def api(self, path: str) -> bytes:
        """GET `path` of the node's HTTP API (e.g. "/status", "/metrics")."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}{path}", timeout=10) as resp:
            return bytes(resp.read())


class MultiNode:
    """N node processes, one anvil devnet, one shared container (see the module's docstring)."""

    def __init__(self, dev: Devnet, container_url: str, journal: Path) -> None:
        self.dev = dev
        self.container_url = container_url
        self.journal = journal
        self.nodes: list[RigNode] = []

    @classmethod
    @contextmanager
    def open(cls, workdir: Path) -> Iterator[MultiNode]:
        """Starts anvil, deploys the contracts (registry, coordinator, subscription manager, example consumer) and the
        shared container; stops every process when the block ends, however it ends."""
        with Devnet(workdir) as dev:
            dev.start_anvil()
            dev.deploy()
            url = f"http://127.0.0.1:{free_port()}"
            journal = workdir / "journal.txt"
            container = dev.start(
                "container",
                [
                    sys.executable,
                    "-m",
                    "tests.faults.faulty_container",
                    "--port",
                    url.rsplit(":", 1)[1],
                    "--journal",
                    str(journal),
                ],
            )
            wait_until(
                lambda: http_ok(url + "/health"), timeout_s=30, what="the echo container", alive=container.check_alive
            )
            yield cls(dev, url, journal)

    # -------------------------------------------------------------------------------------------- nodes

    def add_node(
        self, name: str, *, ws: bool = False, models: dict[str, str | dict[str, Any]] | None = None, **chain: Any
    ) -> RigNode:
        """A new node `name` with the next dev account, staked in the NodeRegistry, and its config written (`models`:
        its `[[models]]` as `Devnet.write_node_config` takes them, default the shared echo container; `chain`: more
        `[chain]` keys); not started."""
        account = dev_account(FIRST_ACCOUNT + len(self.nodes))
        self.dev.register_node(account)
        if models is None:
            models = {MODEL: {"url": self.container_url, "timeout_s": 30, "max_concurrency": 4}}
        config = self.dev.write_node_config(models, name=name, ws_url=None if ws else "", **chain)
        node = RigNode(
            name,
            account,
            config,
            self.dev.api_port,
            base_nonce=self.dev.w3.eth.get_transaction_count(account.address),
            env={"INFERA_PRIVATE_KEY": str(account.key.hex())},
        )
        self.nodes.append(node)
        return node

    def start(self, node: RigNode, timeout_s: float = 60, *, fault: str | None = None) -> Proc:
        """Starts (or restarts) `node`'s process and returns once its log says it listens; raises `DevnetError`
        if it exits first, `TimeoutError` after `timeout_s`. `fault`: a fault point (`node.faultpoint`) armed in it
        (`died_at` waits for it to be reached)."""

        def said() -> int:
            text = node.log_path.read_text() if node.log_path.exists() else ""
            return sum(text.count(words) for words in LISTENING)

        before = said()
        env = node.env if fault is None else {**node.env, "INFERA_FAULT_POINT": fault}
        node.proc = self.dev.start_node(node.config, env=env, name=node.name)
        wait_until(
            lambda: said() > before,
            timeout_s=timeout_s,
            what=f"node {node.name} to listen",
            alive=node.proc.check_alive,
        )
        return node.proc

    def start_to_die(self, node: RigNode, point: str, timeout_s: float = 60) -> None:
        """Starts `node` with the fault-injection `point` armed (`node.faultpoint`) and returns once it has killed
        itself there (SIGKILL); raises `AssertionError` if it exited any other way, `TimeoutError` if it never did."""
        proc = self.dev.start_node(node.config, env={**node.env, "INFERA_FAULT_POINT": point}, name=node.name)
        wait_until(lambda: proc.popen.poll() is not None, timeout_s=timeout_s, what=f"{node.name} to die at {point}")
        self.dev.procs.remove(proc)
        assert proc.popen.returncode == -signal.SIGKILL, (
            f"{node.name} exited with {proc.popen.returncode}, not at {point}"
        )
        node.restarts += 1

    def died_at(self, node: RigNode, point: str, timeout_s: float = 120) -> None:
        """Waits for `node`, started with `fault=point`, to kill itself there; raises `AssertionError` if it exited
        any other way, `TimeoutError` if it never did."""
        proc = node.proc
        assert proc is not None, f"node {node.name} is not running"
        wait_until(lambda: proc.popen.poll() is not None, timeout_s=timeout_s, what=f"{node.name} to die at {point}")
        self.dev.procs.remove(proc)
        node.proc = None
        assert proc.popen.returncode == -signal.SIGKILL, (
            f"{node.name} exited with {proc.popen.returncode}, not at {point}"
        )
        node.restarts += 1

    def kill(self, node: RigNode) -> None:
        """SIGKILL: no cleanup, nothing flushed beyond what the node had committed."""
        assert node.proc is not None, f"node {node.name} is not running"
        os.killpg(node.proc.popen.pid, signal.SIGKILL)
        node.proc.popen.wait()
        self.dev.procs.remove(node.proc)
        node.proc = None
        node.restarts += 1

    def stop(self, node: RigNode) -> int:
        """SIGTERM (a graceful stop), SIGKILL after 10 s; returns the exit code."""
        assert node.proc is not None, f"node {node.name} is not running"
        code = self.dev.stop(node.proc)
        node.proc = None
        return code

    def check_alive(self) -> None:
        """Raises `DevnetError` (with its log's tail) if a started node has exited."""
        for node in self.nodes:
            if node.proc is not None:
                node.proc.check_alive()

    def wait(self, check: Callable[[], T | None], what: str, timeout_s: float = 60) -> T:
        """`wait_until(check)` that fails early when a node died."""
        return wait_until(check, timeout_s=timeout_s, what=what, interval_s=0.1, alive=self.check_alive)

    def tx_count(self, node: RigNode) -> int:
        """Transactions of `node`'s key mined since it was staked (its nonce: replacements count once)."""
        return int(self.dev.w3.eth.get_transaction_count(node.account.address)) - node.base_nonce

    def head_of(self, node: RigNode) -> int | None:
        """The head block the node's listener has (its `/status`), or None before it has one."""
        import json

        try:
            return json.loads(node.api("/status"))["chain"]["head"]  # type: ignore[no-any-return]
        except OSError:
            return None

    # ------------------------------------------------------------------------------------------- the chain

    def rpc(self, method: str, *params: Any) -> Any:
        """A raw JSON-RPC call to anvil; returns its result."""
        return self.dev.w3.provider.make_request(method, list(params))["result"]  # type: ignore[arg-type]

    def now(self) -> int:
        """The latest block's timestamp."""
        return int(self.dev.w3.eth.get_block("latest")["timestamp"])

    def mine(self) -> int:
        """Mines one block; returns its number."""
        self.rpc("evm_mine")
        return int(self.dev.w3.eth.block_number)

    def advance_to(self, timestamp: int) -> int:
        """Mines the next block at `timestamp` (later blocks go on from there with the wall clock); returns its
        number."""
        self.rpc("evm_setNextBlockTimestamp", timestamp)
        return self.mine()

    def increase_time(self, seconds: int) -> int:
        """Moves the chain's clock `seconds` on and mines a block there; returns its number."""
        self.rpc("evm_increaseTime", seconds)
        return self.mine()

    def hold(self) -> None:
        """Parks every container call (nothing is computed) until `release`."""
        urllib.request.urlopen(urllib.request.Request(f"{self.container_url}/hold", method="POST"), timeout=5)

    def release(self) -> None:
        """Lets the parked container calls (and every later one) through."""
        urllib.request.urlopen(urllib.request.Request(f"{self.container_url}/release", method="POST"), timeout=5)

    def deploy(self, name: str, *args: Any) -> Contract:
        """Deploys a forge artifact (src/ or test/utils/) from the deployer account."""
        return self.dev._deploy(name, *args)

    def transact(self, fn: Any, sender: LocalAccount | None = None, value: int = 0) -> Any:
        """Sends `fn` (from the dApp user unless `sender`) and returns its receipt; a revert raises `DevnetError`."""
        return self.dev._transact(fn, sender or self.dev.user, value)
