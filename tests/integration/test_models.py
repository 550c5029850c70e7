"""Each model server through the real runtime: outputs, batching, streaming, and bad input."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from eth_abi.abi import decode, encode

from containers.echo.model import EchoModel
from containers.embed.model import EmbedModel, dequantize, quantize
from containers.runtime.server import STATE, BatchConfig
from tests.integration.conftest import base_url, on_chain, post, start_server


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture(scope="module")
async def embed_server() -> AsyncIterator[TestServer]:
    server = await start_server(EmbedModel(), batching=BatchConfig(max_batch_size=32, max_wait_ms=20))
    yield server
    await server.close()


# ----------------------------------------------------------------------------------------------------- embed


def test_quantization_round_trips_within_half_a_step() -> None:
    vector = [0.5, -0.25, 0.0, 0.125, -0.5]
    data, scale_e12 = quantize(vector)
    assert len(data) == len(vector)
    step = scale_e12 / 1e12
    assert all(abs(a - b) <= step / 2 + 1e-12 for a, b in zip(dequantize(data, scale_e12), vector, strict=True))


async def test_embedding_fits_on_chain_and_keeps_meaning(
    session: aiohttp.ClientSession, embed_server: TestServer
) -> None:
    url = base_url(embed_server)
    texts = ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Interest rates rose again this quarter."]
    vectors = []
    for text in texts:
        status, body = await post(session, url, on_chain(encode(["string"], [text])))
        assert status == 200, body
        data, scale = decode(["bytes", "uint256"], bytes.fromhex(body["raw_output"]))
        assert len(data) == 384  # MiniLM-L6: one int8 per dimension
        vectors.append(dequantize(data, scale))
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    model = embed_server.app[STATE].model
    assert isinstance(model, EmbedModel)
    assert cosine(vectors[0], model.embed([texts[0]])[0]) > 0.999  # int8 loses almost nothing


async def test_concurrent_requests_are_batched_and_match_single_requests(
    session: aiohttp.ClientSession, embed_server: TestServer
) -> None:
    url = base_url(embed_server)
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'markets'}" + " padding" * (i % 5) for i in range(24)]
    alone = [await post(session, url, on_chain(encode(["string"], [t]))) for t in texts]
    together = await asyncio.gather(*(post(session, url, on_chain(encode(["string"], [t]))) for t in texts))
    for (s1, b1), (s2, b2) in zip(alone, together, strict=True):
        assert s1 == s2 == 200
        v1 = dequantize(*decode(["bytes", "uint256"], bytes.fromhex(b1["raw_output"])))
        v2 = dequantize(*decode(["bytes", "uint256"], bytes.fromhex(b2["raw_output"])))
        assert cosine(v1, v2) > 0.999  # padding in a batch must not change the answer
    async with session.get(f"{url}/info") as resp:
        batching = (await resp.json())["batching"]
    assert batching["largest_batch"] > 1


async def test_embed_answers_offchain_with_the_embedding_as_hex(
    session: aiohttp.ClientSession, embed_server: TestServer
) -> None:
    url = base_url(embed_server)
    status, body = await post(session, url, {"source": 1, "destination": 1, "data": {"text": "hello world"}})
    assert status == 200, body
    assert set(body["output"]) == {"embedding", "scaleE12"}
    _, chain = await post(session, url, on_chain(encode(["string"], ["hello world"])))
    data, scale = decode(["bytes", "uint256"], bytes.fromhex(chain["raw_output"]))
    assert body["output"] == {"embedding": "0x" + data.hex(), "scaleE12": scale}
    # in a batch, beside an on-chain item, each is what it would be alone
    items = [{"source": 1, "destination": 1, "data": {"text": "hello world"}}, on_chain(encode(["string"], ["hi"]))]
    async with session.post(f"{url}/service_output/batch", json={"requests": items}) as resp:
        assert resp.status == 200
        answers = (await resp.json())["answers"]
    assert [a["status"] for a in answers] == [200, 200]
    assert answers[0]["body"] == body


# -------------------------------------------------------------------------------------------------- generate


async def test_generation_is_deterministic_and_bounded(
    session: aiohttp.ClientSession, generate_server: TestServer
) -> None:
    url = base_url(generate_server)
    body = on_chain(encode(["string", "uint32"], ["the quick brown fox", 8]))
    answers = [await post(session, url, body) for _ in range(2)]
    assert answers[0] == answers[1]
    status, payload = answers[0]
    assert status == 200
    (text,) = decode(["string"], bytes.fromhex(payload["raw_output"]))
    assert isinstance(text, str)
    status, payload = await post(session, url, on_chain(encode(["string", "uint32"], ["hi", 17])))
    assert status == 400
    assert "max_new_tokens must be an integer from 1 to 16" in payload["error"]


async def test_streamed_tokens_join_to_the_unstreamed_answer(
    session: aiohttp.ClientSession, generate_server: TestServer
) -> None:
    url = base_url(generate_server)
    offchain = {"source": 1, "destination": 1, "data": {"prompt": "a node runs the model", "max_new_tokens": 10}}
    status, whole = await post(session, url, offchain)
    assert status == 200
    tokens, done = [], False
    async with session.post(f"{url}/service_output/stream", json=offchain) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        event = "message"
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "done":
                    done = True
                else:
                    tokens.append(json.loads(line[6:])["token"])
                event = "message"
    assert done
    assert len(tokens) > 1
    assert "".join(tokens) == whole["output"]["text"]


async def test_batched_generation_matches_one_at_a_time(
    session: aiohttp.ClientSession, generate_server: TestServer
) -> None:
    url = base_url(generate_server)
    prompts = [("the quick brown fox jumps", 6), ("héllo", 3), ("smart contracts ask for inference and get", 9)]
    bodies = [on_chain(encode(["string", "uint32"], list(p))) for p in prompts]
    alone = [await post(session, url, b) for b in bodies]
    together = await asyncio.gather(*(post(session, url, b) for b in bodies))
    assert alone == list(together)


async def test_models_that_do_not_stream_say_so(session: aiohttp.ClientSession, echo_url: str) -> None:
    async with session.post(f"{echo_url}/service_output/stream", json=on_chain(b"\x01")) as resp:
        assert resp.status == 404
        assert "does not stream" in (await resp.json())["error"]


# ------------------------------------------------------------------------------------------ classify (checkpoint)


async def test_checkpoint_classifier_answers_with_its_own_labels(
    session: aiohttp.ClientSession, checkpoint_server: TestServer
) -> None:
    url = base_url(checkpoint_server)
    status, body = await post(session, url, on_chain(encode(["string"], ["this is terrible i hate it"])))
    assert status == 200
    label, score = decode(["string", "uint256"], bytes.fromhex(body["raw_output"]))
    assert label in {"calm", "urgent", "spam"}
    assert 1_000_000 // 3 <= score <= 1_000_000  # the argmax of three labels holds at least a third
    async with session.get(f"{url}/info") as resp:
        info = await resp.json()
    assert info["kind"] == "sequence-classification"
    assert info["labels"] == ["calm", "urgent", "spam"]


# --------------------------------------------------------------------------------------- bad input, every server

TOO_LONG = "x" * 9000


@pytest.fixture(params=["classify", "checkpoint", "embed", "generate", "echo"])
def server_case(
    request: pytest.FixtureRequest,
    classify_url: str,
    checkpoint_server: TestServer,
    embed_server: TestServer,
    generate_server: TestServer,
    echo_url: str,
) -> tuple[str, str]:
    urls = {
        "classify": classify_url,
        "checkpoint": base_url(checkpoint_server),
        "embed": base_url(embed_server),
        "generate": base_url(generate_server),
        "echo": echo_url,
    }
    return str(request.param), urls[str(request.param)]


def good_input(name: str) -> bytes:
    if name == "generate":
        return encode(["string", "uint32"], ["hello", 2])
    if name == "echo":
        return b"\x01"
    return encode(["string"], ["hello"])


def bad_inputs(name: str) -> list[tuple[bytes | str, str]]:
    cases: list[tuple[bytes | str, str]] = [(b"", "empty"), ("0xnothex", "not a hex string")]
    if name == "echo":
        return cases
    text_types = ["string", "uint32"] if name == "generate" else ["string"]
    args: list[Any] = [TOO_LONG, 2] if name == "generate" else [TOO_LONG]
    return [
        *cases,
        (b"\xde\xad\xbe\xef", "cannot decode input as"),
        (
            encode(["bytes", "uint32"] if name == "generate" else ["bytes"], [b"\xff\xfe", 2][: len(text_types)]),
            "not valid UTF-8",
        ),
        (encode(text_types, args), "the limit is"),
    ]


async def test_bad_input_is_a_400_with_a_reason_and_the_server_stays_up(
    session: aiohttp.ClientSession, server_case: tuple[str, str]
) -> None:
    name, url = server_case
    for data, reason in bad_inputs(name):
        status, body = await post(session, url, on_chain(data))
        assert status == 400, (name, data, body)
        assert reason in body["error"], (name, body)
    async with session.post(f"{url}/service_output", data=b"{" + b" " * 300_000 + b"}") as resp:
        assert resp.status == 413  # over the body limit: refused before it is read
    status, _ = await post(session, url, on_chain(good_input(name)))
    assert status == 200


def test_echo_refuses_an_empty_offchain_input() -> None:
    from containers.runtime.model import InputError

    with pytest.raises(InputError, match="must not be empty"):
        EchoModel().check(("",))


def test_batch_quantization_matches_the_reference() -> None:
    import torch

    from containers.embed.model import quantize_rows

    rows = torch.nn.functional.normalize(torch.randn(5, 384, generator=torch.Generator().manual_seed(1)), dim=-1)
    assert quantize_rows(rows) == [quantize(row.tolist()) for row in rows]
