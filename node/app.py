"""The node's lifecycle owner: builds the parts, runs them in one TaskGroup, stops them on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import aiohttp
from eth_utils.address import to_checksum_address

from node.chain.contracts import CoordinatorAbi, InferenceRequest, model_id
from node.chain.listener import Listener
from node.chain.rpc import http_client
from node.chain.tx import TxSender
from node.config import NodeConfig
from node.dispatch.http import HttpDispatcher
from node.errors import RpcUnavailable
from node.jobs.scheduler import Route, Scheduler
from node.jobs.store import JobStore
from node.keys import load_account

log = logging.getLogger(__name__)


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

        async with aiohttp.ClientSession() as session:
            routes = {
                model_id(m.name): Route(
                    model=m,
                    dispatcher=HttpDispatcher(session, m.url, timeout_s=m.timeout_s),
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
                log.info("serving %s via %s", route.model.name, route.model.url)
            log.info(
                "node %s up on chain %d, coordinator %s",
                account.address,
                chain_id,
                cfg.chain.coordinator_address,
            )
            async with asyncio.TaskGroup() as tg:
                listen_task = tg.create_task(listener.run(), name="listener")
                schedule_task = tg.create_task(scheduler.run(requests), name="scheduler")
                await self.stopping.wait()
                log.info("stopping: finishing in-flight jobs")
                listen_task.cancel()
                schedule_task.cancel()
        with contextlib.suppress(Exception):
            await w3.provider.disconnect()
        log.info("stopped")
