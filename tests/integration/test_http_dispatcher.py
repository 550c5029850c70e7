"""The node's HTTP dispatcher against real containers."""

from __future__ import annotations

import aiohttp
import pytest
from eth_abi.abi import decode, encode

from node.devnet import free_port
from node.dispatch.http import HttpDispatcher
from node.errors import ContainerError, ContainerRejected
from tests.integration.conftest import FlakyModel, start_server


async def test_compute_returns_the_containers_abi_output(session: aiohttp.ClientSession, classify_url: str) -> None:
    dispatcher = HttpDispatcher(session, classify_url, timeout_s=30)
    out = await dispatcher.compute(encode(["string"], ["I absolutely love this, it is wonderful"]))
    assert decode(["string", "uint256"], out)[0] == "positive"


async def test_rejected_input_is_not_retryable(session: aiohttp.ClientSession, classify_url: str) -> None:
    dispatcher = HttpDispatcher(session, classify_url, timeout_s=30)
    with pytest.raises(ContainerRejected, match="cannot decode input as") as info:
        await dispatcher.compute(b"\xde\xad\xbe\xef")
    assert info.value.status == 400
    assert not info.value.retryable


async def test_model_error_is_retryable(session: aiohttp.ClientSession) -> None:
    server = await start_server(FlakyModel(failures=1))
    try:
        dispatcher = HttpDispatcher(session, str(server.make_url("")), timeout_s=30)
        with pytest.raises(ContainerError, match="simulated model failure") as info:
            await dispatcher.compute(b"\x01")
        assert info.value.retryable
        assert info.value.status == 500
        assert await dispatcher.compute(b"\x01") == b"\x01"
    finally:
        await server.close()


async def test_unreachable_container_is_retryable(session: aiohttp.ClientSession) -> None:
    dispatcher = HttpDispatcher(session, f"http://127.0.0.1:{free_port()}", timeout_s=5)
    with pytest.raises(ContainerError, match="unreachable") as info:
        await dispatcher.compute(b"\x01")
    assert info.value.retryable
    assert not await dispatcher.healthy()


async def test_healthy_reflects_the_container(session: aiohttp.ClientSession, echo_url: str) -> None:
    assert await HttpDispatcher(session, echo_url, timeout_s=5).healthy()
