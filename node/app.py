"""The node's lifecycle owner: builds the parts, runs them in one TaskGroup, stops them on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time

import aiohttp
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from node import __version__
from node.api import auth as api_auth
from node.api import rest, server
from node.api import status as status_api
from node.api.auth import Clients
from node.api.delegated import DelegatedRequests
from node.api.jobs import OffchainJobs
from node.chain.contracts import CoordinatorAbi, model_id
from node.chain.listener import Listener
from node.chain.rpc import RpcPool, public_url
from node.chain.tracking import TxPolicy
from node.chain.tx import TxManager
from node.config import ModelConfig, MqttConfig, NodeConfig, WalletConfig
from node.dispatch.http import HttpDispatcher
from node.dispatch.mqtt import MqttDispatcher, MqttHub
from node.errors import ConfigError, RpcUnavailable
from node.jobs.scheduler import Route, Scheduler
from node.jobs.store import JobStore
from node.keys import load_account
from node.observability.health import Health
from node.observability.memory import HeapTrimmer
from node.observability.metrics import Metrics
from node.retry import backoff_s

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
#: Python's recursion limit while the node runs. py_ecc (imported through eth-account) raises it to 100,000 at import;
#: with that, `json.loads` of a deeply nested answer (an RPC's, a container's, an API client's) overflows the C stack
#: and kills the process (a segfault, found by the container answer fuzzing) instead of raising RecursionError.
#: The node recurses nowhere near this deep.
RECURSION_LIMIT = 4000


def bound_recursion() -> None:
    """Sets the recursion limit back to `RECURSION_LIMIT` (call after every import that may raise it)."""
    sys.setrecursionlimit(RECURSION_LIMIT)


def _hub(cfg: MqttConfig, default_node_id: str) -> MqttHub:
    password = None
    if cfg.password_env:
        password = os.environ.get(cfg.password_env)
        if password is None:
            raise ConfigError(f"mqtt.password_env: env variable {cfg.password_env} is not set")
    return MqttHub(cfg.url, cfg.node_id or default_node_id, username=cfg.username, password=password)


def _dispatcher(m: ModelConfig, session: aiohttp.ClientSession, hub: MqttHub | None) -> HttpDispatcher | MqttDispatcher:
    if m.transport == "mqtt":
        assert hub is not None  # the config validator guarantees an [mqtt] section
        return MqttDispatcher(hub, m.name, timeout_s=m.timeout_s, max_dispatches=m.max_dispatches)
    assert m.url is not None
    return HttpDispatcher(session, m.url, timeout_s=m.timeout_s, name=m.name)


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

    async def serve(self) -> None:
        """Runs until SIGINT/SIGTERM (or `stopping` is set), then shuts down in order."""
        bound_recursion()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        cfg = self.config
        accounts = load_accounts(cfg.wallet)
        clients = Clients(cfg.api.tokens)  # a token env var that is not set stops the node here
        abi = CoordinatorAbi.from_artifacts(cfg.chain.artifacts_dir)
        rpc = RpcPool([cfg.chain.rpc_url, *cfg.chain.fallback_rpc_urls])
        chain_id = await self._wait_for_chain(rpc)
        if chain_id is None:
            return
        coordinator = to_checksum_address(cfg.chain.coordinator_address)
        store = JobStore(cfg.store.path, chain_id=chain_id, coordinator=coordinator)
        pruned = store.prune(cfg.store.retention_days * 86400)
        try:
            await self._serve(cfg, rpc, store, abi, accounts, clients, coordinator, chain_id, pruned)
        finally:
            store.close()
            await rpc.close()
        log.info("stopped")

    async def _serve(
        self,
        cfg: NodeConfig,
        rpc: RpcPool,
        store: JobStore,
        abi: CoordinatorAbi,
        accounts: list[LocalAccount],
        clients: Clients,
        coordinator: str,
        chain_id: int,
        pruned: int,
    ) -> None:
        c = cfg.chain
        policy = TxPolicy(
            max_fee_per_gas_wei=c.max_fee_per_gas_wei,
            priority_fee_wei=c.priority_fee_wei,
            bump_percent=c.bump_percent,
            bump_after_blocks=c.bump_after_blocks,
            confirmations=c.confirmations,
            max_batch=c.max_batch,
            max_pending_per_key=c.max_pending_txs,
            max_sends_per_s=c.max_sends_per_s,
            max_sends_per_block=c.max_sends_per_block,
            retry_window_s=c.delivery_retry_window_s,
            receipt_poll_s=min(1.0, c.poll_interval_s),
        )
        metrics = Metrics() if cfg.api.port else None  # nobody could read them without the HTTP server
        txm = TxManager(rpc, store, abi, to_checksum_address(coordinator), accounts, policy, metrics=metrics)
        if not await self._start_sender(txm):
            return
        hub = _hub(cfg.mqtt, accounts[0].address.lower()) if cfg.mqtt else None
        async with aiohttp.ClientSession() as session:
            dispatchers = {m.name: _dispatcher(m, session, hub) for m in cfg.models}
            routes = {
                model_id(m.name): Route(
                    model=m, dispatcher=dispatchers[m.name], slots=asyncio.Semaphore(m.max_concurrency)
                )
                for m in cfg.models
            }
            scheduler = Scheduler(store, routes, txm, metrics=metrics, clock=txm.clock.now)  # the chain's time
            txm.upcoming = lambda: scheduler.running + scheduler.waiting
            trimmer = HeapTrimmer(lambda: txm.settled)
            txm.on_idle = trimmer.idle

            def on_reorg(fork: int) -> None:
                orphaned = store.orphan_from(fork)
                scheduler.cancel(orphaned)
                txm.on_reorg(fork)

            listener = Listener(
                rpc,
                c.ws_url,
                to_checksum_address(coordinator),
                abi,
                store,
                start_block=c.start_block,
                confirmations=c.confirmations,
                poll_interval_s=c.poll_interval_s,
                models={model_id(m.name): m.name for m in cfg.models},
                on_jobs=scheduler.admit,
                on_head=txm.on_head,
                on_reorg=on_reorg,
                fallback_ws_urls=c.fallback_ws_urls,
                stale_head_min_s=c.stale_head_min_s,
                stale_head_max_s=c.stale_head_max_s,
            )
            health = Health(
                rpc,
                listener,
                {name: d.healthy for name, d in dispatchers.items()},
                max_lag_blocks=cfg.api.max_lag_blocks,
                max_silence_s=cfg.api.max_silence_s,
            )
            offchain = OffchainJobs(
                session,
                cfg.models,
                {r.model.name: r.slots for r in routes.values()},  # shares each model's concurrency limit
                keep=cfg.api.keep_jobs,
                max_batch=cfg.api.max_batch,
                metrics=metrics,
            )

            async def compute_delegated(job_id: str, model: str, input_: bytes) -> bytes:
                route = routes[model_id(model)]
                async with route.slots:
                    called, ok = time.perf_counter(), False
                    try:
                        output = await route.dispatcher.compute(job_id, input_)
                        ok = True
                        return output
                    finally:
                        if metrics is not None:
                            metrics.observe_container(model, time.perf_counter() - called, ok=ok)

            delegated = DelegatedRequests(
                rpc,
                abi,
                coordinator,
                chain_id,
                accounts[0].address,
                {model_id(m.name): m.name for m in cfg.models},
                compute_delegated,
                txm.send_call,
                txm.call_hashes,
                keep=cfg.api.keep_jobs,
                metrics=metrics,
            )

            def info() -> dict[str, object]:
                return {
                    "version": __version__,
                    "chain_id": chain_id,
                    "coordinator": coordinator,
                    "nodes": [a.address for a in accounts],
                    "models": [
                        {"name": m.name, "transport": m.transport, "max_concurrency": m.max_concurrency}
                        for m in cfg.models
                    ],
                    "api_tokens": len(cfg.api.tokens),
                    "offchain_jobs_submitted": offchain.submitted,
                    "delegated_requests_accepted": delegated.accepted,
                }

            runner = None
            if cfg.api.port:
                assert metrics is not None
                metrics.watch(store=store, rpc=rpc, listener=listener, scheduler=scheduler, txm=txm, health=health)
                view = status_api.StatusView(
                    chain_id, coordinator, health, listener, store, scheduler, txm, metrics, trimmer
                )
                status = lambda: {  # noqa: E731
                    "jobs": store.counts(),
                    "txs_in_flight": txm.in_flight,
                    "queued": txm.queued,
                    "duplicates_dropped": store.duplicates,
                    "reorgs": listener.reorgs,
                }
                app = server.make_app(
                    health,
                    status,
                    middlewares=api_auth.middlewares(clients, cfg.api.max_body_bytes),
                    max_body_bytes=cfg.api.max_body_bytes,
                    setup=[
                        lambda a: rest.add_routes(a, offchain, delegated, info, self.stopping),
                        lambda a: status_api.add_routes(a, view),
                    ],
                )
                runner = await server.start(app, cfg.api.host, cfg.api.port)
                if cfg.api.host not in ("127.0.0.1", "::1", "localhost"):
                    log.warning(
                        "api.host %s: the status page, /metrics and /info are open to whoever reaches this address;"
                        " put a TLS reverse proxy with access control in front",
                        cfg.api.host,
                    )
                log.info("status page on http://%s:%d/ (metrics: /metrics)", cfg.api.host, cfg.api.port)
            for route in routes.values():
                where = route.model.url if route.model.transport == "http" else f"the MQTT pool at {cfg.mqtt.url}"  # type: ignore[union-attr]
                log.info("serving %s via %s", route.model.name, where)
            log.info(
                "node %s up on chain %d, coordinator %s, store %s (%d old jobs pruned)",
                ", ".join(a.address for a in accounts),
                chain_id,
                coordinator,
                cfg.store.path,
                pruned,
            )
            scheduler.resume()
            try:
                async with asyncio.TaskGroup() as tg:
                    listen_task = tg.create_task(listener.run(), name="listener")
                    tx_task = tg.create_task(txm.run(), name="transactions")
                    watch_task = tg.create_task(health.watch_containers(), name="health")
                    prune_task = tg.create_task(self._prune(store, cfg.store.retention_days), name="prune")
                    hub_task = tg.create_task(hub.run(), name="mqtt") if hub else None
                    balance_task = (
                        tg.create_task(metrics.watch_balances(rpc, txm.addresses), name="balances") if metrics else None
                    )
                    await self.stopping.wait()
                    log.info("stopping: finishing in-flight jobs")
                    listen_task.cancel()
                    watch_task.cancel()
                    prune_task.cancel()
                    if balance_task:
                        balance_task.cancel()
                    await scheduler.drain()  # computations finish first (their jobs are stored either way)
                    tx_task.cancel()  # what is computed or sent is in the store: the next start resumes it
                    if hub_task:
                        hub_task.cancel()
            finally:
                await offchain.close()
                await delegated.close()
                if runner is not None:
                    await runner.cleanup()

    async def _wait_for_chain(self, rpc: RpcPool) -> int | None:
        """The chain id, retrying with capped backoff while no RPC endpoint answers; None if stopped meanwhile."""
        delay = 1.0
        while not self.stopping.is_set():
            try:
                return int(await rpc.call("eth_chainId", lambda w3: w3.eth.chain_id))
            except RpcUnavailable as exc:
                log.error(
                    "chain.rpc_url: cannot reach %s (%s); retrying in %.0f s",
                    ", ".join(public_url(u) for u in rpc.urls),
                    exc,
                    delay,
                )
            except Exception as exc:  # any answer at all: the node waits for a usable one, it never exits on it
                log.error(
                    "chain.rpc_url: eth_chainId answered %s: %s; retrying in %.0f s", type(exc).__name__, exc, delay
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(30.0, delay * 2)
        return None

    async def _start_sender(self, txm: TxManager) -> bool:
        """Starts the transaction manager (chain id, head, nonces, resumed transactions), retrying with capped
        back-off whatever the RPC answers; False if the node was stopped meanwhile."""
        attempt = 0
        while not self.stopping.is_set():
            try:
                await txm.start()
                return True
            except Exception as exc:  # an RPC answer must not end the process: wait and ask again
                attempt += 1
                delay = backoff_s(attempt, 1.0, 30.0)
                log.error("could not start sending (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
        return False

    async def _prune(self, store: JobStore, retention_days: float) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            deleted = store.prune(retention_days * 86400)
            if deleted:
                log.info("pruned %d finished job(s) older than %.1f days", deleted, retention_days)
