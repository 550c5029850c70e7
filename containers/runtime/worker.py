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

from containers.runtime.mqtt import JobMessage, ReplyMessage, broker_address, shared_jobs_topic
from containers.runtime.server import STATE, ServerState, process

log = logging.getLogger(__name__)

RECONNECT_MAX_S = 10.0


class Worker:
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
        self.host, self.port = broker_address(url)
        self.topic = shared_jobs_topic(pool, state.model.name)
        self.worker_id = f"infera-worker-{pool}-{uuid.uuid4().hex[:8]}"
        self._username = username
        self._password = password
        self._slots = asyncio.Semaphore(max_inflight)
        self._cache_size = cache_size
        self._answers: OrderedDict[str, ReplyMessage] = OrderedDict()
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.computed = 0
        #: Set while the worker is subscribed and taking jobs.
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        await self.state.ready.wait()
        failures = 0
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=self.worker_id,
                    username=self._username,
                    password=self._password,
                    protocol=aiomqtt.ProtocolVersion.V5,
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    log.info("worker %s taking jobs from %s on %s:%d", self.worker_id, self.topic, self.host, self.port)
                    failures = 0
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
            except aiomqtt.MqttError as exc:
                failures += 1
                delay = min(RECONNECT_MAX_S, 0.5 * 2 ** (failures - 1))
                log.warning("worker lost the broker (%s); reconnecting in %.1f s", exc, delay)
                await asyncio.sleep(delay)

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
            data = json.loads(raw)
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
