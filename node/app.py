"""The node's lifecycle: waits for the chain, has the parts built (node/builder.py), runs them in one TaskGroup, and
stops them in order on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import aiohttp
from aiohttp import web
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from node.api import server
from node.api.auth import Clients
from node.builder import Parts, build, where_served
from node.chain.contracts import CoordinatorAbi
from node.chain.rpc import RpcPool, public_url
from node.chain.standing import CoordinatorMismatch
from node.chain.subscriptions import ManagerAbi, ManagerTarget
from node.chain.tx import TxManager
from node.config import NodeConfig, WalletConfig
from node.errors import ConfigError, RpcUnavailable
from node.instance import InstanceLocks, hold_instance, hold_leader_keys
from node.jobs.db import redact_url
from node.jobs.lease import Lease, LeaseLost, Replica, default_replica_name, lease_name
from node.jobs.replicas import keep_lease, release_lease, wait_for_lease
from node.jobs.store import JobStore
from node.keys import load_account
from node.retry import backoff_s, wait_set

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
#: While stopping, how often the node says which tasks it still waits for, in seconds.
SHUTDOWN_REPORT_S = 5.0
#: Python's recursion limit while the node runs. py_ecc (imported through eth-account) raises it to 100,000 at import;
#: with that, `json.loads` of a deeply nested answer (an RPC's, a container's, an API client's) overflows the C stack
#: and kills the process (a segfault, found by the container answer fuzzing) instead of raising RecursionError.
#: The node recurses nowhere near this deep.
RECURSION_LIMIT = 4000


def bound_recursion() -> None:
    """Sets the recursion limit back to `RECURSION_LIMIT` (call after every import that may raise it)."""
    sys.setrecursionlimit(RECURSION_LIMIT)


def load_accounts(wallet: WalletConfig) -> list[LocalAccount]:
    """The main key, then one per `extra_key_envs` entry."""
    accounts = [load_account(wallet)]
    for env in wallet.extra_key_envs:
        accounts.append(load_account(WalletConfig(private_key_env=env)))
    return accounts


class Node:
    """The daemon: builds its parts from a `NodeConfig`, runs them in one TaskGroup, shuts down in order on
    SIGINT/SIGTERM."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.stopping = asyncio.Event()
        #: What the node waits for before its own API is up (the one problem of `/readyz` until then).
        self.waiting_for = "starting: connecting to the chain"
        #: The starting API (`/healthz` 200, `/readyz` 503 with `waiting_for`), until `_run` starts the node's own.
        self._waiting: web.AppRunner | None = None
        #: This process among replicas (a single node with an SQLite store).
        self.replica = Replica(config.store.replica_name or default_replica_name(), None)

    async def serve(self) -> None:
        """Runs until SIGINT/SIGTERM (or `stopping` is set), then shuts down in order."""
        bound_recursion()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        cfg = self.config
        accounts = load_accounts(cfg.wallet)
        if cfg.store.url is None:
            locks = hold_instance(cfg.store.path, [a.address for a in accounts], cfg.chain.rpc_url)  # one node each
        else:  # replicas on one PostgreSQL store share keys; the leader lease decides which one acts
            locks = InstanceLocks()
        clients = Clients(cfg.api.tokens)  # a token env var that is not set stops the node here
        abi = CoordinatorAbi.from_artifacts(cfg.chain.artifacts_dir)
        manager = None
        if cfg.chain.subscription_manager_address:
            manager = ManagerTarget(
                to_checksum_address(cfg.chain.subscription_manager_address),
                ManagerAbi.from_artifacts(cfg.chain.artifacts_dir),
            )
        rpc = RpcPool([cfg.chain.rpc_url, *cfg.chain.fallback_rpc_urls])
        if cfg.api.port:  # /healthz answers until the node's own API replaces it (`_run`)
            waiting = server.waiting_app(lambda: self.waiting_for, self.replica)
            self._waiting = await server.start(waiting, cfg.api.host, cfg.api.port)
        try:
            await self._serve(rpc, abi, accounts, clients, manager)
        finally:
            await self._stop_waiting()
            await rpc.close()
            locks.release()
        log.info("stopped")

    def _say(self, line: str) -> None:
        """Sets what the node waits for (`/readyz`'s one problem while the starting API runs)."""
        self.waiting_for = line

    async def _stop_waiting(self) -> None:
        """Closes the starting API (`waiting_app`), if it still runs."""
        if self._waiting is not None:
            await self._waiting.cleanup()
            self._waiting = None

    async def _serve(
        self,
        rpc: RpcPool,
        abi: CoordinatorAbi,
        accounts: list[LocalAccount],
        clients: Clients,
        manager: ManagerTarget | None,
    ) -> None:
        """From the chain's first answer to the end: the chain and coordinator checks, the store, the parts, the
        run."""
        cfg = self.config
        chain_id = await self._wait_for_chain(rpc)
        if chain_id is None:
            return
        if cfg.chain.chain_id is not None and chain_id != cfg.chain.chain_id:
            raise ConfigError(
                f"chain.rpc_url: {public_url(rpc.url)} serves chain {chain_id}, but chain.chain_id says chain"
                f" {cfg.chain.chain_id}; point chain.rpc_url at the right chain (or fix chain_id)"
            )
        coordinator = to_checksum_address(cfg.chain.coordinator_address)
        if cfg.store.url is None:
            await self._lead(rpc, abi, accounts, clients, manager, chain_id, coordinator, None)
            return
        # A replica: it works only while it holds the leader lease, renewed from the moment it is taken (the
        # start-up below may take longer than the lease) until after the last write; LeaseLost ends it all.
        lease = Lease(cfg.store.url, lease_name(chain_id, coordinator), self.replica.name, cfg.store.lease_ttl_s)
        self.replica.lease, self.replica.role = lease, "standby"
        containers = {m.name: m.url for m in cfg.models if m.transport == "http" and m.url is not None}
        if not await wait_for_lease(self.replica, self.stopping, self._say, containers):
            lease.close()
            return
        lost: list[BaseException] = []

        def on_renewal_end(task: asyncio.Task[None]) -> None:  # the lease is gone: stop (nothing more is written)
            if not task.cancelled() and task.exception() is not None:
                lost.append(task.exception())  # type: ignore[arg-type]
                self.stopping.set()

        renewing = asyncio.create_task(keep_lease(self.replica), name="lease")
        renewing.add_done_callback(on_renewal_end)
        try:
            await self._lead(rpc, abi, accounts, clients, manager, chain_id, coordinator, lease)
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            await release_lease(self.replica)  # after the last write: a standby takes over at its next try
        if lost:  # `infera run` exits 1: restarted by its unit, it comes back as a standby
            raise lost[0]

    async def _lead(
        self,
        rpc: RpcPool,
        abi: CoordinatorAbi,
        accounts: list[LocalAccount],
        clients: Clients,
        manager: ManagerTarget | None,
        chain_id: int,
        coordinator: ChecksumAddress,
        lease: Lease | None,
    ) -> None:
        """The node at work (alone, or as the replicas' leader under `lease`): the store, the parts, the run."""
        cfg = self.config
        store = JobStore(
            cfg.store.location,
            chain_id=chain_id,
            coordinator=coordinator,
            subscription_manager=manager.address if manager else None,
        )
        key_locks = None
        if lease is not None:
            store.fence_with(lease)
            key_locks, left = hold_leader_keys([a.address for a in accounts], cfg.chain.rpc_url)
            for line in left:
                log.warning("%s; the leader lease decides which replica sends", line)
        try:
            pruned = store.prune(cfg.store.retention_days * 86400)
            async with aiohttp.ClientSession() as session:
                parts = build(
                    cfg,
                    rpc=rpc,
                    store=store,
                    abi=abi,
                    accounts=accounts,
                    clients=clients,
                    coordinator=coordinator,
                    chain_id=chain_id,
                    session=session,
                    stopping=self.stopping,
                    manager=manager,
                    replica=self.replica,
                )
                if lease is not None:
                    parts.txm.guard_sends(self.replica.check_may_send)
                if await self._check_coordinator(parts, chain_id) and await self._start_sender(parts.txm):
                    await self._run(parts, accounts, chain_id, coordinator, pruned)
        finally:
            store.close()
            if key_locks is not None:
                key_locks.release()

    async def _run(self, p: Parts, accounts: list[LocalAccount], chain_id: int, coordinator: str, pruned: int) -> None:
        """Starts the API, resumes stored jobs, runs every loop in one TaskGroup until `stopping`, then stops them
        in order: intake first (listener), computations drained, then sending (what is computed or sent is in the
        store: the next start resumes it)."""
        cfg = self.config
        runner = None
        watch: asyncio.Task[None] | None = None
        try:
            if p.app is not None:
                await self._stop_waiting()
                runner = await server.start(p.app, cfg.api.host, cfg.api.port)
                if cfg.api.host not in ("127.0.0.1", "::1", "localhost"):
                    log.warning(
                        "api.host %s: the status page, /metrics and /info are open to whoever reaches this address;"
                        " put a TLS reverse proxy with access control in front",
                        cfg.api.host,
                    )
                log.info("status page on http://%s:%d/ (metrics: /metrics)", cfg.api.host, cfg.api.port)
            for route in p.routes.values():
                log.info("serving %s via %s", route.model.name, where_served(cfg, route.model))
            log.info(
                "node %s up on chain %d, coordinator %s, store %s (%d old jobs pruned)",
                ", ".join(a.address for a in accounts),
                chain_id,
                coordinator,
                redact_url(cfg.store.location),
                pruned,
            )
            if p.provenance is not None:  # a container serving other weights than committed stops the node here
                await p.provenance.check()
            p.scheduler.resume()
            p.offchain.resume()  # the /v1 jobs a stopped run (or replica) left unfinished
            p.delegated.resume()
            async with asyncio.TaskGroup() as tg:
                intake = [
                    tg.create_task(p.listener.run(), name="listener"),
                    tg.create_task(p.health.watch_containers(), name="health"),
                    tg.create_task(self._prune(p.store, cfg.store.retention_days), name="prune"),
                ]
                if p.health.standing is not None:
                    intake.append(tg.create_task(p.health.standing.run(), name="standing"))
                if p.intervals is not None:
                    intake.append(tg.create_task(p.intervals.run(), name="subscriptions"))
                if p.metrics is not None:
                    intake.append(tg.create_task(p.metrics.watch_balances(p.rpc, p.txm.addresses), name="balances"))
                if p.reclaimer is not None:
                    intake.append(tg.create_task(p.reclaimer.run(), name="reclaim"))
                if p.finalizer is not None:
                    intake.append(tg.create_task(p.finalizer.run(), name="finalize"))
                if p.revealer is not None:
                    intake.append(tg.create_task(p.revealer.run(), name="reveal"))
                if p.provenance is not None:
                    intake.append(tg.create_task(p.provenance.watch(), name="provenance"))
                if p.challenger is not None:
                    intake.append(tg.create_task(p.challenger.run(), name="challenge"))
                tx_task = tg.create_task(p.txm.run(), name="transactions")
                hub_task = tg.create_task(p.hub.run(), name="mqtt") if p.hub else None
                await self.stopping.wait()
                log.info("stopping: finishing in-flight jobs")
                watch = asyncio.create_task(
                    _say_what_is_left(), name="shutdown-watch"
                )  # not in the group: ends with it
                for task in intake:
                    task.cancel()
                await p.scheduler.drain()  # computations finish first (their jobs are stored either way)
                tx_task.cancel()
                if hub_task:
                    hub_task.cancel()
        finally:
            if watch is not None:
                watch.cancel()
            await p.offchain.close()
            await p.delegated.close()
            if runner is not None:
                await runner.cleanup()

    async def _wait_for_chain(self, rpc: RpcPool) -> int | None:
        """The chain id, retrying with capped backoff while no RPC endpoint answers; None if stopped meanwhile."""
        delay = 1.0
        while not self.stopping.is_set():
            try:
                return int(await rpc.call("eth_chainId", lambda w3: w3.eth.chain_id))
            except RpcUnavailable as exc:
                self.waiting_for = f"RPC unreachable ({', '.join(public_url(u) for u in rpc.urls)}): {exc}"
                log.error(
                    "chain.rpc_url: cannot reach %s (%s); retrying in %.0f s",
                    ", ".join(public_url(u) for u in rpc.urls),
                    exc,
                    delay,
                )
            except Exception as exc:  # any answer at all: the node waits for a usable one, it never exits on it
                self.waiting_for = f"RPC {public_url(rpc.url)} answered eth_chainId with {type(exc).__name__}"
                log.error(
                    "chain.rpc_url: eth_chainId answered %s: %s; retrying in %.0f s", type(exc).__name__, exc, delay
                )
            await wait_set(self.stopping, delay)
            delay = min(30.0, delay * 2)
        return None

    async def _check_coordinator(self, p: Parts, chain_id: int) -> bool:
        """Checks that the coordinator address holds a Coordinator this node speaks, retrying with capped back-off
        while the RPC fails; False if the node was stopped meanwhile. Raises `CoordinatorMismatch` (a `ConfigError`:
        `infera run` exits 2 naming the address and what to give instead) when it does not."""
        standing = p.health.standing
        attempt = 0
        while standing is not None and not self.stopping.is_set():
            try:
                await standing.check_identity(chain_id)
                return True
            except (CoordinatorMismatch, LeaseLost):
                raise
            except Exception as exc:  # an RPC failure: ask again, the answer decides
                attempt += 1
                delay = backoff_s(attempt, 1.0, 30.0)
                self.waiting_for = f"starting: cannot check the coordinator ({type(exc).__name__}); retrying"
                log.error("cannot check the coordinator (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                await wait_set(self.stopping, delay)
        return standing is None

    async def _start_sender(self, txm: TxManager) -> bool:
        """Starts the transaction manager (chain id, head, nonces, resumed transactions), retrying with capped
        back-off whatever the RPC answers; False if the node was stopped meanwhile."""
        attempt = 0
        while not self.stopping.is_set():
            try:
                await txm.start()
                return True
            except LeaseLost:  # a replica whose lease ended while it started: it must not go on
                raise
            except Exception as exc:  # an RPC answer must not end the process: wait and ask again
                attempt += 1
                delay = backoff_s(attempt, 1.0, 30.0)
                self.waiting_for = (
                    f"starting: cannot read the keys' nonces and transactions ({type(exc).__name__}); retrying"
                )
                log.error("could not start sending (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                await wait_set(self.stopping, delay)
        return False

    async def _prune(self, store: JobStore, retention_days: float) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            deleted = store.prune(retention_days * 86400)
            if deleted:
                log.info("pruned %d finished job(s) older than %.1f days", deleted, retention_days)


async def _say_what_is_left() -> None:
    """During shutdown: every `SHUTDOWN_REPORT_S` seconds, logs which of the node's tasks are still running and
    where each waits, so a slow stop says what it waits for instead of being silent. Ends with the TaskGroup."""
    while True:
        await asyncio.sleep(SHUTDOWN_REPORT_S)
        me = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        where = []
        for task in left:
            frames = task.get_stack(limit=1)
            at = f"{frames[0].f_code.co_filename.rsplit('/', 1)[-1]}:{frames[0].f_lineno}" if frames else "?"
            where.append(f"{task.get_name()} ({at})")
        log.info("stopping: still waiting for %d task(s): %s", len(left), ", ".join(sorted(where))[:2000])
