"""The wire protocol shared by the node and the containers (`containers/runtime/wire.py`), both sides at once: the
container runtime serves a model in-process, and the node's one call path (`ModelRoute` over `HttpDispatcher`) calls
it for on-chain inputs, off-chain jobs and streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from containers.echo.model import EchoModel
from containers.runtime.server import STATE, create_app
from containers.runtime.wire import STREAM_DONE, STREAM_ERROR, StreamReader, stream_done, stream_error, stream_piece
from node.config import ModelConfig
from node.dispatch.calls import ModelRoute
from node.dispatch.http import HttpDispatcher
from node.errors import ContainerError, ContainerRejected


class Words(EchoModel):
    """Echoes its `data`, and streams it word by word; a text with "boom" in it fails after its first word."""

    def stream(self, args: tuple[Any, ...]) -> Iterator[str]:
        for n, word in enumerate(str(args[0]).split()):
            if n and "boom" in args[0]:
                raise RuntimeError("the model blew up")
            yield word + " "


@pytest.fixture
async def url() -> AsyncIterator[str]:
    server = TestServer(create_app(Words("words")), host="127.0.0.1")
    await server.start_server()
    await server.app[STATE].ready.wait()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def words(url: str) -> AsyncIterator[ModelRoute]:
    async with aiohttp.ClientSession() as session:
        model = ModelConfig(name="words", url=url, max_attempts=2, retry_backoff_s=0.01)
        yield ModelRoute(model, HttpDispatcher(session, url, timeout_s=10, name="words"))


def test_stream_events_read_back_as_written() -> None:
    reader = StreamReader()
    lines = b"".join([stream_piece("a"), stream_piece("b c"), stream_error("bad"), stream_done()]).decode()
    events = [e for line in lines.splitlines(keepends=True) if (e := reader.feed(line)) is not None]
    assert events == [
        ("", '{"token": "a"}'),
        ("", '{"token": "b c"}'),
        (STREAM_ERROR, '{"error": "bad"}'),
        (STREAM_DONE, "{}"),
    ]


async def test_an_onchain_input_comes_back_as_its_abi_output(words: ModelRoute) -> None:
    assert (await words.call("1", b"\x01\x02")).output == b"\x01\x02"


async def test_an_offchain_job_gets_the_output_fields(words: ModelRoute) -> None:
    assert await words.call_offchain("job", {"data": "hi"}) == {"data": "hi"}
    with pytest.raises(ContainerRejected, match="data must not be empty"):
        await words.call_offchain("job", {"data": ""})


async def test_a_stream_hands_out_each_piece_and_returns_them_joined(words: ModelRoute) -> None:
    pieces: list[str] = []
    assert await words.stream("job", {"data": "one two three"}, pieces.append) == "one two three "
    assert pieces == ["one ", "two ", "three "]


async def test_a_model_that_fails_mid_stream_fails_the_stream_without_a_retry(words: ModelRoute) -> None:
    pieces: list[str] = []
    with pytest.raises(ContainerError, match="failed while streaming: the model blew up"):
        await words.stream("job", {"data": "boom now"}, pieces.append)
    assert pieces == ["boom "]
    assert words.calls_made == 1


async def test_a_container_that_cannot_stream_rejects_the_stream() -> None:
    async with aiohttp.ClientSession() as session:
        plain = create_app(EchoModel("plain"))
        server = TestServer(plain, host="127.0.0.1")
        await server.start_server()
        await server.app[STATE].ready.wait()
        try:
            base = str(server.make_url("")).rstrip("/")
            route = ModelRoute(ModelConfig(name="plain", url=base), HttpDispatcher(session, base, timeout_s=10))
            with pytest.raises(ContainerRejected, match="plain does not stream"):
                await route.stream("job", {"data": "x"}, lambda _: None)
        finally:
            await server.close()
