"""What the node and the workers agree on over MQTT: topics, messages, broker URLs, and the one way either keeps its
broker connection (`Broker.serve`: reconnect with a capped back-off, subscribe before anything else)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import urlparse

import aiomqtt

log = logging.getLogger(__name__)

#: The longest wait before connecting again to a lost broker (the waits double from 0.5 s up to it).
RECONNECT_MAX_S = 10.0
JOBS_PREFIX = "infera/jobs/"
REPLIES_PREFIX = "infera/replies/"
_TOPIC_SAFE = re.compile(r"^[^#+\x00]+$")


class JobMessage(TypedDict):
    """Published by the node on `infera/jobs/<model>`: the container-protocol body and where to answer."""

    job_id: str
    reply_to: str
    body: dict[str, Any]


class ReplyMessage(TypedDict):
    """Published by a worker on the job's `reply_to`: what the HTTP route would have answered."""

    job_id: str
    status: int
    body: dict[str, Any]
    worker: str


def jobs_topic(model_name: str) -> str:
    """The topic a model's jobs are published to; raises ValueError for a name MQTT cannot carry."""
    if not _TOPIC_SAFE.match(model_name):
        raise ValueError(f"model name {model_name!r} cannot be an MQTT topic (no '+', '#' or NUL)")
    return JOBS_PREFIX + model_name


def shared_jobs_topic(pool: str, model_name: str) -> str:
    """The shared subscription (`$share/<pool>/…`) a pool of workers takes `model_name`'s jobs from."""
    if not re.match(r"^[A-Za-z0-9_.-]+$", pool):
        raise ValueError(f"pool name {pool!r}: use letters, digits, '_', '.', '-'")
    return f"$share/{pool}/{jobs_topic(model_name)}"


def broker_address(url: str) -> tuple[str, int]:
    """`mqtt://host:port` → (host, port); port 1883 when left out."""
    parsed = urlparse(url)
    if parsed.scheme != "mqtt" or not parsed.hostname:
        raise ValueError(f"broker URL must look like mqtt://host:port, got {url!r}")
    return parsed.hostname, parsed.port or 1883


@dataclass(frozen=True)
class Broker:
    """A broker to connect to, and as whom (the password stays out of `repr`)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def at(cls, url: str, *, username: str | None = None, password: str | None = None) -> Broker:
        """The broker at `mqtt://host:port` (`broker_address`)."""
        host, port = broker_address(url)
        return cls(host, port, username, password)

    async def serve(
        self, identifier: str, topic: str, session: Callable[[aiomqtt.Client], Awaitable[None]], *, who: str
    ) -> None:
        """Until cancelled: connects as `identifier` (MQTT 5), subscribes to `topic` with QoS 1 and runs
        `session(client)` on the connection. A lost broker (`aiomqtt.MqttError`, `who` names the loser in the log)
        is connected again after a back-off that doubles from 0.5 s up to `RECONNECT_MAX_S` and starts over once a
        subscription succeeds."""
        failures = 0
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=identifier,
                    username=self.username,
                    password=self.password,
                    protocol=aiomqtt.ProtocolVersion.V5,
                ) as client:
                    await client.subscribe(topic, qos=1)
                    failures = 0
                    await session(client)
            except aiomqtt.MqttError as exc:
                failures += 1
                delay = min(RECONNECT_MAX_S, 0.5 * 2 ** (failures - 1))
                log.warning("%s lost the broker (%s); reconnecting in %.1f s", who, exc, delay)
                await asyncio.sleep(delay)
