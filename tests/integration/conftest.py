"""Model servers started in-process on free loopback ports: the real runtime, real models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from containers.classify.model import ZeroShotClassifier
from containers.echo.model import EchoModel
from containers.runtime.model import Model
from containers.runtime.server import STATE, create_app


class FlakyModel(EchoModel):
    """An echo model that raises on its first `failures` calls: drives the runtime's 500 path."""

    def __init__(self, failures: int) -> None:
        super().__init__("flaky")
        self.failures = failures
        self.calls = 0

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"simulated model failure {self.calls}")
        return super().predict(inputs)


async def start_server(model: Model, *, max_body_bytes: int = 64 * 1024) -> TestServer:
    server = TestServer(create_app(model, max_body_bytes=max_body_bytes), host="127.0.0.1")
    await server.start_server()
    await asyncio.wait_for(server.app[STATE].ready.wait(), timeout=120)
    return server


@pytest.fixture(scope="session")
async def classify_url() -> AsyncIterator[str]:
    server = await start_server(ZeroShotClassifier())
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture(scope="session")
async def echo_url() -> AsyncIterator[str]:
    server = await start_server(EchoModel())
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
