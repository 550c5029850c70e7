"""Consensus answers, served by the real runtime with the real packaged models: /info states each model's form, a
body with `consensus: true` is answered in it (HTTP single and batch, and the MQTT worker) and a plain body is not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from eth_abi.abi import decode, encode

from containers.echo.model import EchoModel
from containers.embed.model import EmbedModel, requantize
from containers.runtime.server import STATE
from containers.runtime.wire import chain_request
from node.dispatch.mqtt import MqttHub
from tests.integration.conftest import base_url, on_chain, post, start_server, unique

TEXTS = ["What a fantastic movie, truly great", "Terrible customer support, never again", "It was fine, I guess."]


@pytest.fixture(scope="module")
async def embed_server() -> AsyncIterator[TestServer]:
    server = await start_server(EmbedModel())
    yield server
    await server.close()


async def _info(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/info") as resp:
        assert resp.status == 200
        info: dict[str, Any] = await resp.json()
        return info


def _consensus(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "consensus": True}


async def test_info_states_each_models_consensus_form(
    session: aiohttp.ClientSession, classify_url: str, echo_url: str, embed_server: TestServer
) -> None:
    classify = (await _info(session, classify_url))["consensus"]
    assert classify["form"] == "label"
    assert classify["score_step_e6"] == 0
    assert classify["description"]
    embed = (await _info(session, base_url(embed_server)))["consensus"]
    assert embed["form"] == "rounded"
    assert (embed["step_e12"], embed["decimals"]) == (10**10, 2)
    assert (await _info(session, echo_url))["consensus"]["form"] == "bytes"


async def test_classify_answers_the_label_form_to_consensus_bodies_and_raw_bytes_to_plain_ones(
    session: aiohttp.ClientSession, classify_url: str
) -> None:
    for text in TEXTS:
        body = on_chain(encode(["string"], [text]))
        status, plain = await post(session, classify_url, body)
        assert status == 200, plain
        status, agreed = await post(session, classify_url, _consensus(body))
        assert status == 200, agreed
        label, score = decode(["string", "uint256"], bytes.fromhex(plain["raw_output"]))
        assert 0 < score <= 1_000_000  # the plain answer keeps its score
        assert agreed["raw_output"] == encode(["string", "uint256"], [label, 0]).hex()
        status, off = await post(session, classify_url, {"source": 1, "destination": 1, "data": {"text": text}})
        status_c, off_c = await post(
            session, classify_url, {"source": 1, "destination": 1, "data": {"text": text}, "consensus": True}
        )
        assert (status, status_c) == (200, 200)
        assert off["output"] == {"label": label, "scoreE6": score}
        assert off_c["output"] == {"label": label, "scoreE6": 0}


async def test_embed_answers_the_fixed_scale_form_to_consensus_bodies(
    session: aiohttp.ClientSession, embed_server: TestServer
) -> None:
    url = base_url(embed_server)
    model = embed_server.app[STATE].model
    for text in TEXTS:
        body = on_chain(encode(["string"], [text]))
        _, plain = await post(session, url, body)
        _, agreed = await post(session, url, _consensus(body))
        data, scale = decode(["bytes", "uint256"], bytes.fromhex(plain["raw_output"]))
        assert scale != 10**10
        got, got_scale = decode(["bytes", "uint256"], bytes.fromhex(agreed["raw_output"]))
        assert (got, got_scale) == requantize(data, scale, 10**10)
        assert model.canonical((got, got_scale)) == (got, got_scale)  # what was delivered is already canonical
        assert max(abs(b - 256 if b > 127 else b) for b in got) <= 100  # unit vector, 2 decimals


async def test_a_batch_answers_each_body_in_its_own_form(session: aiohttp.ClientSession, classify_url: str) -> None:
    body = on_chain(encode(["string"], [TEXTS[0]]))
    async with session.post(f"{classify_url}/service_output/batch", json={"requests": [body, _consensus(body)]}) as r:
        assert r.status == 200
        plain, agreed = (a["body"] for a in (await r.json())["answers"])
    label, score = decode(["string", "uint256"], bytes.fromhex(plain["raw_output"]))
    assert score > 0
    assert agreed["raw_output"] == encode(["string", "uint256"], [label, 0]).hex()


async def test_the_mqtt_worker_answers_consensus_jobs_in_the_same_form(
    classify_server: TestServer, hub: MqttHub
) -> None:
    model = classify_server.app[STATE].model.name
    input_ = encode(["string"], [TEXTS[1]])
    plain = await hub.request(model, "consensus-plain", chain_request(input_), timeout_s=30)
    agreed = await hub.request(model, "consensus-yes", chain_request(input_, consensus=True), timeout_s=30)
    assert (plain["status"], agreed["status"]) == (200, 200)
    label, score = decode(["string", "uint256"], bytes.fromhex(plain["body"]["raw_output"]))
    assert score > 0
    assert agreed["body"]["raw_output"] == encode(["string", "uint256"], [label, 0]).hex()


async def test_echo_answers_consensus_bodies_byte_for_byte(session: aiohttp.ClientSession, echo_url: str) -> None:
    body = on_chain(b"\x01\x02\x03 agreed")
    _, plain = await post(session, echo_url, body)
    status, agreed = await post(session, echo_url, _consensus(body))
    assert status == 200
    assert agreed["raw_output"] == plain["raw_output"] == b"\x01\x02\x03 agreed".hex()


@pytest.mark.parametrize("value", ["true", 1, None, [True]])
async def test_a_consensus_key_that_is_not_a_boolean_is_a_400(
    session: aiohttp.ClientSession, classify_url: str, value: Any
) -> None:
    status, answer = await post(session, classify_url, {**on_chain(encode(["string"], ["hi"])), "consensus": value})
    assert status == 400
    assert "consensus must be true or false" in answer["error"]


class UpperEcho(EchoModel):
    """An echo that streams its input and whose consensus form upper-cases it: a streaming model with a form other
    than "bytes", which the stream route must refuse to answer in pieces."""

    def stream(self, args: tuple[Any, ...]) -> Iterator[str]:
        yield from str(args[0])

    def consensus_form(self) -> dict[str, Any]:
        return {"form": "upper", "description": "upper case"}

    def canonical(self, output: tuple[Any, ...]) -> tuple[Any, ...]:
        return (str(output[0]).upper(),)


async def test_the_stream_route_refuses_consensus_for_a_form_other_than_bytes(
    session: aiohttp.ClientSession,
) -> None:
    server = await start_server(UpperEcho(unique("upper")))
    try:
        url, body = base_url(server), {"source": 1, "destination": 1, "data": {"data": "agreed"}}
        async with session.post(f"{url}/service_output/stream", json={**body, "consensus": True}) as resp:
            assert resp.status == 400
            assert "'upper' form: not streamed" in (await resp.json())["error"]
        async with session.post(f"{url}/service_output/stream", json=body) as resp:
            assert resp.status == 200
            text = await resp.text()
        assert '"token": "a"' in text
        assert "event: done" in text  # a plain body streams as before
        _, agreed = await post(session, url, {**body, "consensus": True})
        assert agreed["output"] == {"data": "AGREED"}
    finally:
        await server.close()
