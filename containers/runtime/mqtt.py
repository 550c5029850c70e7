"""What the node and the workers agree on over MQTT: topics, messages, broker URLs."""

from __future__ import annotations

import re
from typing import Any, TypedDict
from urllib.parse import urlparse

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
    if not _TOPIC_SAFE.match(model_name):
        raise ValueError(f"model name {model_name!r} cannot be an MQTT topic (no '+', '#' or NUL)")
    return JOBS_PREFIX + model_name


def shared_jobs_topic(pool: str, model_name: str) -> str:
    if not re.match(r"^[A-Za-z0-9_.-]+$", pool):
        raise ValueError(f"pool name {pool!r}: use letters, digits, '_', '.', '-'")
    return f"$share/{pool}/{jobs_topic(model_name)}"


def broker_address(url: str) -> tuple[str, int]:
    """`mqtt://host:port` → (host, port); port 1883 when left out."""
    parsed = urlparse(url)
    if parsed.scheme != "mqtt" or not parsed.hostname:
        raise ValueError(f"broker URL must look like mqtt://host:port, got {url!r}")
    return parsed.hostname, parsed.port or 1883
