"""Model servers started in-process on free loopback ports (the real runtime, real models), and a real
Mosquitto broker for the MQTT worker mode."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from containers.classify.model import CheckpointClassifier, ZeroShotClassifier
from containers.echo.model import EchoModel
from containers.generate.model import GenerateModel
from containers.runtime.model import Model
from containers.runtime.server import STATE, BatchConfig, create_app
from containers.runtime.worker import WORKER, add_worker
from node.devnet import Devnet
from node.dispatch.mqtt import MqttHub


class FlakyModel(EchoModel):
    """An echo model that raises on its first `failures` calls: drives the runtime's 500 path."""

    def __init__(self, failures: int, name: str = "flaky") -> None:
        super().__init__(name)
        self.failures = failures
        self.calls = 0

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"simulated model failure {self.calls}")
        return super().predict(inputs)


async def start_server(
    model: Model,
    *,
    max_body_bytes: int = 64 * 1024,
    mqtt_url: str | None = None,
    pool: str = "test",
    batching: BatchConfig | None = None,
    username: str | None = None,
    password: str | None = None,
    attestation_key: bytes | None = None,
    model_digest: bytes | None = None,
) -> TestServer:
    app = create_app(
        model,
        max_body_bytes=max_body_bytes,
        batching=batching,
        attestation_key=attestation_key,
        model_digest=model_digest,
    )
    if mqtt_url:
        add_worker(app, mqtt_url, pool, username=username, password=password)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()  # aiohttp test servers cancel a handler whose caller hangs up, as ours do (cli.py)
    await asyncio.wait_for(server.app[STATE].ready.wait(), timeout=120)
    if mqtt_url:
        await asyncio.wait_for(server.app[WORKER].subscribed.wait(), timeout=30)
    return server


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Mosquitto on a free port; yields its mqtt:// URL."""
    with Devnet(tmp_path_factory.mktemp("broker")) as dev:
        _, url = dev.start_mosquitto()
        yield url


@pytest.fixture(scope="session")
async def classify_server(broker: str) -> AsyncIterator[TestServer]:
    """The packaged-MiniLM zero-shot classifier, on HTTP and in the `test` MQTT pool."""
    server = await start_server(ZeroShotClassifier(), mqtt_url=broker)
    yield server
    await server.close()


@pytest.fixture(scope="session")
def classify_url(classify_server: TestServer) -> str:
    return base_url(classify_server)


@pytest.fixture(scope="session")
async def echo_server(broker: str) -> AsyncIterator[TestServer]:
    server = await start_server(EchoModel(), mqtt_url=broker)
    yield server
    await server.close()


@pytest.fixture(scope="session")
def echo_url(echo_server: TestServer) -> str:
    return base_url(echo_server)


@pytest.fixture(scope="session")
async def hub(broker: str) -> AsyncIterator[MqttHub]:
    """The node side of MQTT, connected to the test broker."""
    hub = MqttHub(broker, "test-node")
    task = asyncio.create_task(hub.run())
    await asyncio.wait_for(hub._connected.wait(), 30)
    yield hub
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_tiny_gpt2

    return build_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_tiny_bert_classifier

    return build_tiny_bert_classifier(tmp_path_factory.mktemp("bert"))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    """POSTs a container-protocol body; returns the status and the JSON answer."""
    async with session.post(f"{url}/service_output", json=body) as resp:
        return resp.status, await resp.json(content_type=None)


def on_chain(data: bytes | str) -> dict[str, Any]:
    """The body the node sends for an on-chain request (`data` as given if already a string)."""
    hex_data = data if isinstance(data, str) else "0x" + data.hex()
    return {"source": 0, "destination": 0, "data": hex_data, "requires_proof": False}


def unique(prefix: str) -> str:
    """A model name no other test uses, so MQTT topics do not cross."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def checkpoint_server(tiny_bert: Path) -> AsyncIterator[TestServer]:
    """A classify server on the tiny random BERT checkpoint (`classify/tiny-bert@1`)."""
    server = await start_server(CheckpointClassifier(str(tiny_bert), "classify/tiny-bert@1"))
    yield server
    await server.close()


@pytest.fixture(scope="module")
async def generate_server(tiny_gpt2: Path) -> AsyncIterator[TestServer]:
    """A generate server on the tiny random GPT-2 (`generate/tiny@1`, 16 new tokens at most)."""
    server = await start_server(GenerateModel(str(tiny_gpt2), "generate/tiny@1", max_new_tokens=16))
    yield server
    await server.close()
