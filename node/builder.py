"""Builds a node's parts from its config, each with everything it needs in its constructor.

The parts talk forward only: listener → store → scheduler → dispatch (containers) → transaction manager → store.
The listener commits each request before the scheduler hears of it (`on_jobs`), the scheduler hands each computed
job to the transaction manager (`enqueue`), and the transaction manager settles jobs in the store. Reorgs go the
other way once, as a notice (`on_reorg`): the store orphans, the scheduler cancels, the transaction manager
re-sends. Nothing is wired by setting attributes after construction; `Node` (node/app.py) only runs the parts.
Metrics read the parts through protocols (node/observability/metrics.py) and import none of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress

from node import __version__
from node.api import auth as api_auth
from node.api import receipts, rest, server
from node.api import status as status_api
from node.api.auth import Clients
from node.api.delegated import DelegatedRequests
from node.api.jobs import OffchainJobs
from node.chain.challenge import Challenger
from node.chain.commitments import CONSENSUS
from node.chain.consensus import Revealer
from node.chain.contracts import CoordinatorAbi, load_artifact, model_id
from node.chain.heads import Head
from node.chain.listener import Listener
from node.chain.policy import TxPolicy
from node.chain.provenance import Provenance
from node.chain.reclaim import Finalizer, Reclaimer
from node.chain.rpc import RpcPool, public_url
from node.chain.standing import DELIVERY_OVERHEAD_GAS, Standing
from node.chain.subscriptions import ManagerTarget
from node.chain.tx import TxManager
from node.config import ETH_TOKEN, ChainConfig, ModelConfig, MqttConfig, NodeConfig
from node.dispatch.calls import ModelRoute
from node.dispatch.http import HttpDispatcher
from node.dispatch.mqtt import MqttDispatcher, MqttHub
from node.dispatch.pipeline import PipelineRoute, Route
from node.errors import ConfigError
from node.jobs.apijobs import ApiJobTable
from node.jobs.lease import Replica
from node.jobs.outcomes import Outcomes
from node.jobs.scheduler import Scheduler
from node.jobs.store import JobStore
from node.jobs.subscriptions import IntervalServer
from node.observability.health import Health
from node.observability.memory import HeapTrimmer
from node.observability.metrics import Metrics, WatchedParts
from node.observability.readiness import ReadinessCollector

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """Every long-lived part of a running node (what `Node` starts, watches and stops)."""

    store: JobStore
    rpc: RpcPool
    txm: TxManager
    scheduler: Scheduler
    listener: Listener
    health: Health
    offchain: OffchainJobs
    delegated: DelegatedRequests
    #: The served models' and pipelines' routes, by model id (not the entries with `served = false`).
    routes: dict[bytes, Route]
    #: The MQTT connection of the models served over MQTT (None: none is).
    hub: MqttHub | None
    #: None when the HTTP API is off (`api.port = 0`): nobody could read them.
    metrics: Metrics | None
    trimmer: HeapTrimmer
    #: The HTTP API (status page, /metrics, /v1), not yet listening; None when `api.port = 0`.
    app: web.Application | None
    #: Makes subscription intervals into jobs; None when no `chain.subscription_manager_address` is set.
    intervals: IntervalServer | None = None
    #: Ends the node's requests left open past their deadline (`reclaim`); set by `build`.
    reclaimer: Reclaimer | None = None
    #: Settles the node's deliveries held for an optimistic verdict once it is due; set by `build` when the node
    #: serves verified requests (`[chain] verifiers`).
    finalizer: Finalizer | None = None
    #: Disputes other nodes' optimistic deliveries this node's models do not reproduce (`[chain] challenge`).
    challenger: Challenger | None = None
    #: Reveals the node's committed consensus outputs once their commit phase is over; set by `build` when the
    #: coordinator has a consensus module.
    revealer: Revealer | None = None
    #: Checks (and commits) each served model's weights digest at start; set by `build`.
    provenance: Provenance | None = None


def tx_policy(c: ChainConfig) -> TxPolicy:
    """The transaction manager's policy from the `[chain]` section (fees in wei, delays in blocks and seconds)."""
    return TxPolicy(
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


def mqtt_hub(cfg: MqttConfig, default_node_id: str) -> MqttHub:
    """The MQTT connection for worker pools; raises `ConfigError` when `password_env` names an unset variable."""
    password = None
    if cfg.password_env:
        password = os.environ.get(cfg.password_env)
        if password is None:
            raise ConfigError(f"mqtt.password_env: env variable {cfg.password_env} is not set")
    return MqttHub(cfg.url, cfg.node_id or default_node_id, username=cfg.username, password=password)


def dispatcher(m: ModelConfig, session: aiohttp.ClientSession, hub: MqttHub | None) -> HttpDispatcher | MqttDispatcher:
    """How `m`'s container is reached: HTTP (its `url`) or an MQTT worker pool (through `hub`)."""
    if m.transport == "mqtt":
        assert hub is not None  # the config validator guarantees an [mqtt] section
        return MqttDispatcher(hub, m.name, timeout_s=m.timeout_s, max_dispatches=m.max_dispatches)
    assert m.url is not None
    return HttpDispatcher(session, m.url, timeout_s=m.timeout_s, name=m.name)


def build(
    cfg: NodeConfig,
    *,
    rpc: RpcPool,
    store: JobStore,
    abi: CoordinatorAbi,
    accounts: list[LocalAccount],
    clients: Clients,
    coordinator: ChecksumAddress,
    chain_id: int,
    session: aiohttp.ClientSession,
    stopping: asyncio.Event,
    manager: ManagerTarget | None = None,
    replica: Replica | None = None,
) -> Parts:
    """Creates every part, in dependency order (`manager`: the SubscriptionManager whose subscriptions are served,
    if any; `replica`: this process among replicas, for /status and /metrics). Raises `ConfigError` for a config
    that cannot be served (an unset MQTT password variable). Nothing is started: no task, no socket."""
    c = cfg.chain
    abi = abi.at(coordinator)  # knows the coordinator's consensus module: consensus requests are served
    # Verified requests the node serves: the operator's verifiers, and the coordinator's own consensus module.
    verifiers: dict[str, str] = dict(c.verifiers)
    if abi.consensus_module is not None:
        verifiers[abi.consensus_module] = CONSENSUS
    metrics = Metrics() if cfg.api.port else None
    trimmer: HeapTrimmer | None = None
    txm = TxManager(
        rpc,
        store,
        abi,
        coordinator,
        accounts,
        tx_policy(c),
        metrics=metrics,
        on_idle=lambda: trimmer.idle() if trimmer is not None else None,
        manager=manager,
    )
    trimmer = HeapTrimmer(lambda: txm.settled)
    hub = mqtt_hub(cfg.mqtt, accounts[0].address.lower()) if cfg.mqtt else None
    dispatchers = {m.name: dispatcher(m, session, hub) for m in cfg.models if m.pipeline is None}
    # One route per container, shared by on-chain jobs, off-chain jobs, delegated requests and the pipelines it is a
    # stage of: one concurrency limit, one retry policy; deadlines by the chain's time.
    containers = {
        m.name: ModelRoute(m, dispatchers[m.name], clock=txm.clock.now, metrics=metrics)
        for m in cfg.models
        if m.pipeline is None
    }
    routes: dict[bytes, Route] = {
        model_id(m.name): containers[m.name]
        if m.pipeline is None
        else PipelineRoute(m, [containers[s] for s in m.pipeline], metrics=metrics)
        for m in cfg.models
        if m.served
    }
    count = metrics.count_interval if metrics is not None else lambda outcome, n=1: None
    # Verified jobs are delivered from the first key (an attestation is bound to the address that delivers it).
    scheduler = Scheduler(
        store,
        routes,
        txm,
        clock=txm.clock.now,
        count_interval=count,
        verifiers=verifiers,
        node=accounts[0].address,
    )
    served = {model_id(m.name): m.name for m in cfg.models if m.served}
    intervals = IntervalServer(store, rpc, manager, served, scheduler.admit, count_interval=count) if manager else None

    def on_head(head: Head) -> None:
        txm.on_head(head)
        if intervals is not None:
            intervals.on_head(head)

    def on_reorg(fork: int) -> None:
        scheduler.cancel(store.orphan_from(fork))
        txm.on_reorg(fork)

    listener = Listener(
        rpc,
        c.ws_url,
        coordinator,
        abi,
        store,
        start_block=c.start_block,
        confirmations=c.confirmations,
        poll_interval_s=c.poll_interval_s,
        models=served,
        on_jobs=scheduler.admit,
        on_head=on_head,
        on_reorg=on_reorg,
        fallback_ws_urls=c.fallback_ws_urls,
        stale_head_min_s=c.stale_head_min_s,
        stale_head_max_s=c.stale_head_max_s,
        log_reconcile_s=c.log_reconcile_s,
        manager=manager,
        on_subscriptions=intervals.poke if intervals is not None else lambda: None,
    )
    health = Health(
        rpc,
        listener,
        {name: d.healthy for name, d in dispatchers.items()},
        max_lag_blocks=cfg.api.max_lag_blocks,
        max_silence_s=cfg.api.max_silence_s,
        where={m.name: where_served(cfg, m) for m in cfg.models if m.name in dispatchers},
        standing=standing_of(cfg, rpc, coordinator, [a.address for a in accounts]),
    )
    api_jobs = ApiJobTable(store)  # the /v1 API's jobs, for the next run or leader
    offchain = OffchainJobs(
        {r.model.name: r for r in routes.values()},
        keep=cfg.api.keep_jobs,
        max_batch=cfg.api.max_batch,
        metrics=metrics,
        table=api_jobs,
    )
    delegated = DelegatedRequests(
        rpc,
        abi,
        load_artifact("IDelegatingConsumer", c.artifacts_dir).abi,
        coordinator,
        chain_id,
        accounts[0].address,
        routes,
        txm.send_call,
        keep=cfg.api.keep_jobs,
        metrics=metrics,
        table=api_jobs,
    )
    parts = Parts(
        store,
        rpc,
        txm,
        scheduler,
        listener,
        health,
        offchain,
        delegated,
        routes,
        hub,
        metrics,
        trimmer,
        app=None,
        intervals=intervals,
    )
    parts.reclaimer = Reclaimer(rpc, abi, coordinator, Outcomes(store), txm)
    if c.verifiers:
        parts.finalizer = Finalizer(rpc, abi, coordinator, store, txm)
    if abi.consensus_module is not None:
        on_outcome = metrics.count_consensus if metrics is not None else lambda outcome: None
        parts.revealer = Revealer(rpc, abi, coordinator, store, txm, count=on_outcome)
    parts.provenance = Provenance(rpc, abi, coordinator, cfg.models, txm, session, artifacts_dir=c.artifacts_dir)
    if c.challenge:
        parts.challenger = Challenger(
            rpc,
            abi,
            coordinator,
            load_artifact("ReexecutionVerifier", c.artifacts_dir).abi,
            [address for address, kind in c.verifiers.items() if kind == "optimistic"],
            routes,
            txm,
            start_block=c.start_block,
            store=store,
        )
    if cfg.api.port:
        parts.app = _api(cfg, parts, clients, chain_id, coordinator, accounts, stopping, replica)
    return parts


def where_served(cfg: NodeConfig, model: ModelConfig) -> str:
    """Where `model` is computed, for logs and readiness: its container's URL, the MQTT pool, or its pipeline."""
    if model.pipeline is not None:
        return "the pipeline " + " -> ".join(model.pipeline)
    if model.transport == "http":
        return public_url(str(model.url))  # a user:token@ or ?key= in the URL is not shown
    return f"the MQTT pool at {public_url(cfg.mqtt.url) if cfg.mqtt else '?'}"


def standing_of(cfg: NodeConfig, rpc: RpcPool, coordinator: str, addresses: list[str]) -> Standing:
    """The node's on-chain standing reader: its keys, the tokens its served models accept (ETH always), and a
    delivery's gas: `DELIVERY_OVERHEAD_GAS` plus the largest callback gas a served model accepts (the node pays it)."""
    served = [m for m in cfg.models if m.served]
    tokens = list(dict.fromkeys([ETH_TOKEN, *(t for m in served for t in m.accepted_payments)]))
    callback = max((m.max_callback_gas for m in served), default=0)
    return Standing(
        rpc,
        coordinator,
        addresses,
        tokens,
        delivery_gas=DELIVERY_OVERHEAD_GAS + callback,
        min_deliveries=cfg.api.min_deliveries_covered,
        max_fee_per_gas_wei=cfg.chain.max_fee_per_gas_wei,
        key_envs=dict(zip(addresses[1:], cfg.wallet.extra_key_envs, strict=False)),  # after the main key, in order
    )


def _api(
    cfg: NodeConfig,
    p: Parts,
    clients: Clients,
    chain_id: int,
    coordinator: str,
    accounts: list[LocalAccount],
    stopping: asyncio.Event,
    replica: Replica | None = None,
) -> web.Application:
    """The HTTP API's application: /healthz, /readyz, /status and its page, /metrics, /info and the /v1 API."""
    assert p.metrics is not None
    p.metrics.watch(WatchedParts(p.store, p.rpc, p.listener, p.scheduler, p.txm, p.health))
    ReadinessCollector(p.health, p.store, __version__).register(p.metrics.registry)
    if replica is not None:
        p.metrics.registry.register(replica)
    view = status_api.StatusView(
        chain_id, coordinator, p.health, p.listener, p.store, p.scheduler, p.txm, p.metrics, p.trimmer, replica
    )

    def info() -> dict[str, object]:
        return {
            "version": __version__,
            "chain_id": chain_id,
            "coordinator": coordinator,
            "nodes": [a.address for a in accounts],
            "models": [
                {"name": m.name, "max_concurrency": m.max_concurrency, "served": m.served}
                | ({"pipeline": m.pipeline} if m.pipeline is not None else {"transport": m.transport})
                for m in cfg.models
            ],
            "api_tokens": len(cfg.api.tokens),
            "offchain_jobs_submitted": p.offchain.submitted,
            "delegated_requests_accepted": p.delegated.accepted,
        }

    def receipt(request_id: int) -> dict[str, object] | None:
        digests = p.provenance.digests if p.provenance is not None else {}
        found = receipts.build_receipt(p.store, request_id, accounts[0].address, digests)
        return None if found is None else receipts.signed(found, accounts[0])

    def status() -> dict[str, object]:
        return {
            "jobs": p.store.counts(),
            "txs_in_flight": p.txm.in_flight,
            "queued": p.txm.queued,
            "duplicates_dropped": p.store.duplicates,
            "reorgs": p.listener.reorgs,
        }

    return server.make_app(
        p.health,
        status,
        middlewares=api_auth.middlewares(clients, cfg.api.max_body_bytes),
        max_body_bytes=cfg.api.max_body_bytes,
        setup=[
            lambda a: rest.add_routes(a, p.offchain, p.delegated, info, stopping),
            lambda a: status_api.add_routes(a, view),
            lambda a: receipts.add_routes(a, receipt),
        ],
    )
