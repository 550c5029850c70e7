"""Dispatches jobs to GPU worker pools over an MQTT broker.

Jobs go to `infera/jobs/<model>` with QoS 1, where any number of workers on any number of machines share them
through a shared subscription; answers come back on this node's own reply topic and are matched by job id.
Guarantees: a job with no answer within `timeout_s` is re-dispatched under the same job id (a worker that already
computed it answers from its cache), up to `max_dispatches`; the first answer wins and later copies are dropped;
a lost broker connection is re-established with backoff while waiting jobs keep their deadlines. A worker's answer is
classified as an HTTP container's is (`node.dispatch.protocol`), and each one that is not a success is counted in
`CONDITIONS` by its action.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

import aiomqtt

from containers.runtime.mqtt import REPLIES_PREFIX, Broker, JobMessage, ReplyMessage, jobs_topic
from containers.runtime.wire import Attestation, RequestBody, chain_request, offchain_request
from node.dispatch.protocol import Output, classify, offchain_output, parse_json
from node.errors import ContainerError, ContainerRejected, short
from node.observability.conditions import CONDITIONS
from node.retry import wait_set

log = logging.getLogger(__name__)

T = TypeVar("T")


class MqttHub:
    """The node's one broker connection: publishes jobs, routes replies to whoever waits for them."""

    def __init__(self, url: str, node_id: str, *, username: str | None = None, password: str | None = None) -> None:
        self._broker = Broker.at(url, username=username, password=password)
        self.node_id = node_id
        self.reply_topic = REPLIES_PREFIX + node_id
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._pending: dict[str, asyncio.Future[ReplyMessage]] = {}

    async def run(self) -> None:
        """Keeps the connection up until cancelled (`Broker.serve`: reconnects with back-off)."""
        await self._broker.serve(f"infera-node-{self.node_id}", self.reply_topic, self._session, who="node")

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection, subscribed to the reply topic: jobs are published on it, replies routed from it."""
        self._client = client
        self._connected.set()
        try:
            log.info("MQTT connected to %s:%d, replies on %s", self._broker.host, self._broker.port, self.reply_topic)
            async for message in client.messages:
                self._route(message.payload)
        finally:
            self._connected.clear()
            self._client = None

    async def healthy(self) -> bool:
        """Whether the broker connection is up (the workers behind it are the broker's to balance)."""
        return self._connected.is_set()

    def _route(self, payload: Any) -> None:
        try:
            reply = parse_json(payload)
            future = self._pending.get(reply["job_id"])
        except (ValueError, KeyError, TypeError):
            log.error("dropping a malformed reply on %s", self.reply_topic)
            return
        if future is not None and not future.done():
            future.set_result(reply)

    async def request(self, model_name: str, job_id: str, body: RequestBody, timeout_s: float) -> ReplyMessage:
        """Publishes one dispatch of a job and waits for its answer; raises `TimeoutError` if none comes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if not await wait_set(self._connected, timeout_s):
            raise TimeoutError(f"no broker connection within {timeout_s:.0f} s")
        future = self._pending.get(job_id)
        if future is None or future.done():
            future = self._pending[job_id] = loop.create_future()
        message = JobMessage(job_id=job_id, reply_to=self.reply_topic, body=dict(body))
        client = self._client
        if client is None:
            raise TimeoutError("broker connection dropped")
        try:
            await client.publish(jobs_topic(model_name), json.dumps(message), qos=1, timeout=timeout_s)
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(future)
        except aiomqtt.MqttError as exc:
            raise TimeoutError(f"publish failed: {exc}") from None
        finally:
            if future.done():
                self._pending.pop(job_id, None)


class MqttDispatcher:
    """Sends one model's jobs to its worker pool and returns the ABI output bytes with the worker's proof."""

    def __init__(self, hub: MqttHub, model_name: str, *, timeout_s: float, max_dispatches: int) -> None:
        self._hub = hub
        self._model = model_name
        self._timeout_s = timeout_s
        self._max_dispatches = max_dispatches
        jobs_topic(model_name)  # fail at start, not per job, on a name that cannot be a topic

    async def healthy(self) -> bool:
        return await self._hub.healthy()

    async def compute(
        self, job_id: str, input_: bytes, attestation: Attestation | None = None, consensus: bool = False
    ) -> Output:
        """The ABI output bytes for `input_` (ABI-encoded input bytes) and the worker's proof (empty unless
        `attestation` asked for one); `consensus`: in the model's consensus form. Raises the `ContainerError`
        family."""
        status, body, where = await self._answer(job_id, chain_request(input_, attestation, consensus=consensus))
        return self._counted(_classify, status, body, where)

    async def compute_offchain(self, job_id: str, data: dict[str, Any]) -> Any:
        """The output of an off-chain job (its input fields by name). Raises the `ContainerError` family."""
        status, body, where = await self._answer(job_id, offchain_request(data))
        return self._counted(offchain_output, status, body, where)

    async def stream(self, job_id: str, data: dict[str, Any]) -> AsyncGenerator[str, None]:
        """Streaming needs an HTTP container: a worker pool answers whole outputs only."""
        raise ContainerRejected(f"the {self._model} pool is reached over MQTT, which does not stream")
        yield ""  # an async generator, as the protocol's callers iterate it

    def _counted(self, read: Callable[[int, Any, str], T], status: int, body: Any, where: str) -> T:
        try:
            return read(status, body, where)
        except ContainerError as exc:
            CONDITIONS.count("container", exc.action)
            raise

    async def _answer(self, job_id: str, body: RequestBody) -> tuple[int, Any, str]:
        """A worker's (status, body, name) for `body`, re-dispatched as the module docstring says."""
        key = f"{self._hub.node_id}:{job_id}"
        for dispatch in range(1, self._max_dispatches + 1):
            try:
                reply = await self._hub.request(self._model, key, body, self._timeout_s)
            except TimeoutError:
                log.warning(
                    "job %s: no answer from the %s pool within %.1f s (dispatch %d/%d)",
                    job_id,
                    self._model,
                    self._timeout_s,
                    dispatch,
                    self._max_dispatches,
                )
                continue
            try:
                status, worker = int(reply["status"]), short(reply.get("worker", "?"), 40)
            except (KeyError, TypeError, ValueError):
                error = ContainerError(f"a worker of the {self._model} pool answered without a status")
                break
            return status, reply.get("body"), f"worker {worker}"
        else:
            error = ContainerError(
                f"no worker of the {self._model} pool answered after {self._max_dispatches} dispatches"
            )
        CONDITIONS.count("container", error.action)
        raise error


def _classify(status: int, payload: Any, where: str) -> Output:
    return classify(status, payload, where)
