"""MQTT worker mode: a container that also takes jobs from a broker, sharing them with its pool.

Workers of one pool subscribe to `$share/<pool>/infera/jobs/<model>`, so the broker hands each job to one of them;
the answer goes to the job's `reply_to` topic. Guarantees: a job id is computed at most once per worker (a
redelivered job gets the cached answer); the worker subscribes only once its model is ready; on shutdown it stops
taking jobs and finishes the ones it holds before disconnecting. A lost broker is reconnected with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator

import aiomqtt
from aiohttp import web

from containers.runtime.mqtt import Broker, JobMessage, ReplyMessage, shared_jobs_topic
from containers.runtime.server import STATE, ServerState, process
from containers.runtime.wire import parse_json

log = logging.getLogger(__name__)


class Worker:
    """An MQTT worker: takes jobs from a shared subscription, computes them with the server's model and
    publishes each answer to the job's reply topic."""

    def __init__(
        self,
        state: ServerState,
        url: str,
        pool: str,
        *,
        max_inflight: int = 64,
        cache_size: int = 10_000,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.state = state
        self._broker = Broker.at(url, username=username, password=password)
        self.topic = shared_jobs_topic(pool, state.model.name)
        self.worker_id = f"infera-worker-{pool}-{uuid.uuid4().hex[:8]}"
        self._slots = asyncio.Semaphore(max_inflight)
        self._cache_size = cache_size
        self._answers: OrderedDict[str, ReplyMessage] = OrderedDict()
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.computed = 0
        #: Set while the worker is subscribed and taking jobs.
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        """Takes jobs once the model is ready, until cancelled (`Broker.serve`: reconnects with back-off)."""
        await self.state.ready.wait()
        await self._broker.serve(self.worker_id, self.topic, self._session, who="worker")

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection, subscribed to the pool's jobs: each is handled in a task, within `max_inflight`."""
        self.subscribed.set()
        b = self._broker
        log.info("worker %s taking jobs from %s on %s:%d", self.worker_id, self.topic, b.host, b.port)
        try:
            async for message in client.messages:
                await self._slots.acquire()
                task = asyncio.create_task(self._handle(client, message.payload))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            self.subscribed.clear()
            if self._tasks:  # let the jobs we hold answer before the connection goes
                await asyncio.wait(set(self._tasks), timeout=30)

    async def _handle(self, client: aiomqtt.Client, payload: object) -> None:
        try:
            job = self._parse(payload)
            if job is None:
                return
            job_id = job["job_id"]
            cached = self._answers.get(job_id)
            if cached is None:
                if job_id in self._running:
                    return  # redelivered while we compute it: the first copy answers
                self._running.add(job_id)
                try:
                    answer = await process(self.state, job["body"])
                finally:
                    self._running.discard(job_id)
                self.computed += 1
                cached = ReplyMessage(job_id=job_id, status=answer.status, body=answer.body, worker=self.worker_id)
                self._answers[job_id] = cached
                while len(self._answers) > self._cache_size:
                    self._answers.popitem(last=False)
                log.info("worker %s computed job %s: HTTP %d", self.worker_id, job_id, answer.status)
            await client.publish(job["reply_to"], json.dumps(cached), qos=1)
        except aiomqtt.MqttError as exc:
            log.warning("worker could not publish a reply (%s); the node will re-dispatch", exc)
        finally:
            self._slots.release()

    @staticmethod
    def _parse(payload: object) -> JobMessage | None:
        try:
            raw = payload if isinstance(payload, bytes | bytearray | str) else b""
            data = parse_json(raw)
            if not (isinstance(data["job_id"], str) and isinstance(data["reply_to"], str)):
                raise TypeError("job_id and reply_to must be strings")
            return JobMessage(job_id=data["job_id"], reply_to=data["reply_to"], body=data["body"])
        except (ValueError, KeyError, TypeError) as exc:
            log.error("dropping a malformed job message: %s", exc)
            return None


WORKER = web.AppKey("worker", Worker)


def add_worker(
    app: web.Application,
    url: str,
    pool: str,
    *,
    max_inflight: int = 64,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """Makes the app also serve the MQTT pool `pool` on broker `url` while it runs."""
    app[WORKER] = Worker(app[STATE], url, pool, max_inflight=max_inflight, username=username, password=password)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        worker = app[WORKER]
        task = asyncio.create_task(worker.run(), name="mqtt-worker")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(lifecycle)
