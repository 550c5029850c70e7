"""The node's lifecycle owner: builds the parts, runs them in one TaskGroup, stops them on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

import aiohttp
from eth_utils.address import to_checksum_address

from node.chain.contracts import CoordinatorAbi, InferenceRequest, model_id
from node.chain.listener import Listener
from node.chain.rpc import http_client
from node.chain.tx import TxSender
from node.config import ModelConfig, MqttConfig, NodeConfig
from node.dispatch.http import HttpDispatcher
from node.dispatch.mqtt import MqttDispatcher, MqttHub
from node.errors import ConfigError, RpcUnavailable
from node.jobs.scheduler import Dispatcher, Route, Scheduler
from node.jobs.store import JobStore
from node.keys import load_account

log = logging.getLogger(__name__)


def _hub(cfg: MqttConfig, default_node_id: str) -> MqttHub:
    password = None
    if cfg.password_env:
        password = os.environ.get(cfg.password_env)
        if password is None:
            raise ConfigError(f"mqtt.password_env: env variable {cfg.password_env} is not set")
    return MqttHub(cfg.url, cfg.node_id or default_node_id, username=cfg.username, password=password)


def _dispatcher(m: ModelConfig, session: aiohttp.ClientSession, hub: MqttHub | None) -> Dispatcher:
    if m.transport == "mqtt":
        assert hub is not None  # the config validator guarantees an [mqtt] section
        return MqttDispatcher(hub, m.name, timeout_s=m.timeout_s, max_dispatches=m.max_dispatches)
    assert m.url is not None
    return HttpDispatcher(session, m.url, timeout_s=m.timeout_s)


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.stopping = asyncio.Event()
        self.store = JobStore()

    async def serve(self) -> None:
        """Runs until SIGINT/SIGTERM (or `stopping` is set), then shuts down in order."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        cfg = self.config
        account = load_account(cfg.wallet)
        abi = CoordinatorAbi.from_artifacts(cfg.chain.artifacts_dir)
        w3 = http_client(cfg.chain.rpc_url)
        try:
            chain_id = await w3.eth.chain_id
        except Exception as exc:
            raise RpcUnavailable(f"chain.rpc_url: cannot reach {cfg.chain.rpc_url}: {exc}") from None
        coordinator = to_checksum_address(cfg.chain.coordinator_address)
        sender = TxSender(
            w3,
            account,
            coordinator,
            abi,
            max_fee_per_gas_wei=cfg.chain.max_fee_per_gas_wei,
            priority_fee_wei=cfg.chain.priority_fee_wei,
            receipt_timeout_s=cfg.chain.receipt_timeout_s,
        )
        await sender.start()

        hub = _hub(cfg.mqtt, account.address.lower()) if cfg.mqtt else None
        async with aiohttp.ClientSession() as session:
            routes = {
                model_id(m.name): Route(
                    model=m,
                    dispatcher=_dispatcher(m, session, hub),
                    slots=asyncio.Semaphore(m.max_concurrency),
                )
                for m in cfg.models
            }
            scheduler = Scheduler(self.store, routes, sender, delivery_retry_window_s=cfg.chain.delivery_retry_window_s)
            requests: asyncio.Queue[InferenceRequest] = asyncio.Queue()
            listener = Listener(
                w3,
                cfg.chain.ws_url,
                coordinator,
                abi,
                start_block=cfg.chain.start_block,
                poll_interval_s=cfg.chain.poll_interval_s,
                on_request=requests.put_nowait,
            )
            for route in routes.values():
                where = route.model.url if route.model.transport == "http" else f"the MQTT pool at {cfg.mqtt.url}"  # type: ignore[union-attr]
                log.info("serving %s via %s", route.model.name, where)
            log.info(
                "node %s up on chain %d, coordinator %s",
                account.address,
                chain_id,
                cfg.chain.coordinator_address,
            )
            async with asyncio.TaskGroup() as tg:
                listen_task = tg.create_task(listener.run(), name="listener")
                schedule_task = tg.create_task(scheduler.run(requests), name="scheduler")
                hub_task = tg.create_task(hub.run(), name="mqtt") if hub else None
                await self.stopping.wait()
                log.info("stopping: finishing in-flight jobs")
                listen_task.cancel()
                schedule_task.cancel()
                await asyncio.gather(schedule_task, return_exceptions=True)  # jobs drain while MQTT is still up
                if hub_task:
                    hub_task.cancel()
        with contextlib.suppress(Exception):
            await w3.provider.disconnect()
        log.info("stopped")
