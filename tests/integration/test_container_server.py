"""The container protocol, served by the real runtime with real models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest
from eth_abi.abi import decode, encode

from containers.echo.model import EchoModel
from tests.integration.conftest import FlakyModel, on_chain, post, start_server


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I absolutely love this, it is wonderful", "positive"),
        ("What a fantastic movie, truly great", "positive"),
        ("This is the worst thing I have ever bought, I hate it", "negative"),
        ("Terrible customer support, never again", "negative"),
    ],
)
async def test_classifier_labels_clear_sentiment(
    session: aiohttp.ClientSession, classify_url: str, text: str, label: str
) -> None:
    status, body = await post(session, classify_url, on_chain(encode(["string"], [text])))
    assert status == 200, body
    got_label, score = decode(["string", "uint256"], bytes.fromhex(body["raw_output"]))
    assert got_label == label
    assert 500_000 < score <= 1_000_000


async def test_classifier_answers_offchain_json(session: aiohttp.ClientSession, classify_url: str) -> None:
    status, body = await post(
        session, classify_url, {"source": 1, "destination": 1, "data": {"text": "Best day ever!"}}
    )
    assert status == 200
    assert body["output"]["label"] == "positive"
    assert isinstance(body["output"]["scoreE6"], int)


async def test_info_describes_the_model(session: aiohttp.ClientSession, classify_url: str) -> None:
    async with session.get(f"{classify_url}/info") as resp:
        info = await resp.json()
    assert info["model"] == "classify/minilm-sentiment@1"
    assert info["input_abi"] == "(string)"
    assert info["output_abi"] == "(string,uint256)"
    assert info["labels"] == ["positive", "negative"]
    assert info["device"] == "cpu"
    async with session.get(f"{classify_url}/health") as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (on_chain(b"\xde\xad\xbe\xef"), "cannot decode input as (string)"),
        (on_chain(b""), "input is empty"),
        (on_chain("0xnothex"), "data is not a hex string"),
        (on_chain(encode(["bytes"], [b"\xff\xfe"])), "not valid UTF-8"),
        (on_chain(encode(["string"], [""])), "text must be a non-empty string"),
        (on_chain(encode(["string"], ["x" * 5000])), "the limit is 4096"),
        ({"source": 0, "destination": 0}, "missing key: data"),
        ({"source": 7, "destination": 0, "data": "0x"}, "source must be 0 (chain) or 1 (off-chain)"),
        ({"source": 1, "destination": 1, "data": {"txt": "hi"}}, "missing input field(s): text"),
        ([1, 2], "body must be a JSON object"),
    ],
)
async def test_bad_input_is_a_400_with_the_reason_and_the_server_keeps_serving(
    session: aiohttp.ClientSession, classify_url: str, body: Any, reason: str
) -> None:
    status, answer = await post(session, classify_url, body)
    assert status == 400
    assert reason in answer["error"]
    ok, _ = await post(session, classify_url, on_chain(encode(["string"], ["fine"])))
    assert ok == 200


async def test_body_that_is_not_json_is_a_400(session: aiohttp.ClientSession, echo_url: str) -> None:
    async with session.post(f"{echo_url}/service_output", data=b"{not json") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"].startswith("body is not valid JSON")


async def test_oversized_body_is_refused(session: aiohttp.ClientSession, echo_url: str) -> None:
    async with session.post(f"{echo_url}/service_output", json=on_chain(b"\x01" * 100_000)) as resp:
        assert resp.status == 413


async def test_echo_returns_its_input(session: aiohttp.ClientSession, echo_url: str) -> None:
    status, body = await post(session, echo_url, on_chain(b"\x00\x01hello"))
    assert status == 200
    assert bytes.fromhex(body["raw_output"]) == b"\x00\x01hello"
    assert bytes.fromhex(body["raw_input"]) == b"\x00\x01hello"


async def test_model_failure_is_a_500_never_a_200(session: aiohttp.ClientSession) -> None:
    server = await start_server(FlakyModel(failures=1))
    url = str(server.make_url("")).rstrip("/")
    try:
        status, body = await post(session, url, on_chain(b"\x01"))
        assert status == 500
        assert "simulated model failure 1" in body["error"]
        status, body = await post(session, url, on_chain(b"\x01"))
        assert status == 200
    finally:
        await server.close()


async def batch(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with session.post(f"{url}/service_output/batch", json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_a_batch_call_answers_each_item_as_its_own_call_would(
    session: aiohttp.ClientSession, classify_url: str
) -> None:
    bodies = [
        on_chain(encode(["string"], ["I absolutely love this, it is wonderful"])),
        on_chain(b"\xde\xad\xbe\xef"),
        on_chain(encode(["string"], ["Terrible customer support, never again"])),
        {"source": 1, "destination": 1, "data": {"text": "Best day ever!"}},
        {"source": 0, "destination": 0},
    ]
    status, answer = await batch(session, classify_url, {"requests": bodies})
    assert status == 200
    items = answer["answers"]
    assert [item["status"] for item in items] == [200, 400, 200, 200, 400]
    for body, item in zip(bodies, items, strict=True):
        assert (item["status"], item["body"]) == await post(session, classify_url, body)
    assert decode(["string", "uint256"], bytes.fromhex(items[0]["body"]["raw_output"]))[0] == "positive"
    assert decode(["string", "uint256"], bytes.fromhex(items[2]["body"]["raw_output"]))[0] == "negative"


@pytest.mark.parametrize(
    "body",
    [{"requests": []}, {"requests": [on_chain(b"\x01")] * 65}, {"requests": "x"}, [on_chain(b"\x01")]],
    ids=["empty", "over-64", "not-a-list", "not-an-object"],
)
async def test_a_malformed_batch_is_a_400_with_the_reason(
    session: aiohttp.ClientSession, echo_url: str, body: Any
) -> None:
    status, answer = await batch(session, echo_url, body)
    assert status == 400
    assert "1 to 64 request bodies" in answer["error"]


class SetOutputModel(EchoModel):
    """An echo model whose off-chain output for the input "set" is a Python set, which JSON cannot carry."""

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [({1, 2},) if x[0] == "set" else tuple(x) for x in inputs]


async def test_an_output_json_cannot_carry_fails_its_item_only(session: aiohttp.ClientSession) -> None:
    server = await start_server(SetOutputModel("set-output"))
    url = str(server.make_url("")).rstrip("/")
    try:
        offchain = [{"source": 1, "destination": 1, "data": {"data": d}} for d in ("set", "fine", b"\x00".hex())]
        status, answer = await batch(session, url, {"requests": [*offchain, on_chain(b"\x01")]})
        assert status == 200
        items = answer["answers"]
        assert [item["status"] for item in items] == [500, 200, 200, 200]
        assert "set is not JSON serializable" in items[0]["body"]["error"]
        assert items[1]["body"] == {"output": {"data": "fine"}}
        assert (await post(session, url, offchain[0]))[0] == 500
    finally:
        await server.close()
