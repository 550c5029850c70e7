"""Container answers classified once: the status table, Retry-After, Infernet's output conventions, body caps, and a
container without `/health` judged by its answers (real aiohttp containers in-process, no chain)."""

from __future__ import annotations

import email.utils
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from eth_abi.abi import encode

from containers.runtime.wire import chain_request
from node.dispatch.http import HttpDispatcher
from node.dispatch.protocol import classify, onchain_output
from node.errors import Action, ContainerError, ContainerRejected
from node.observability.conditions import CONDITIONS
from node.retry import RETRY_AFTER_MAX_S, retry_after_s
from tests.faults.infernet_containers import create_app


@pytest.mark.parametrize("status", [408, 425, 429, 502, 503, 504, 500, 599, 301])
def test_not_now_statuses_are_retryable(status: int) -> None:
    with pytest.raises(ContainerError) as caught:
        classify(status, {"error": "busy"}, "c", retry_after=3.0)
    assert type(caught.value) is ContainerError
    assert caught.value.action is Action.RETRY
    assert caught.value.retryable
    assert caught.value.status == status
    assert caught.value.retry_after_s == 3.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 418, 422, 451])
def test_other_4xx_are_final(status: int) -> None:
    with pytest.raises(ContainerRejected) as caught:
        classify(status, None, "c")
    assert caught.value.action is Action.REFUSED
    assert not caught.value.retryable


def test_a_containers_long_or_odd_error_is_cut_to_fit_a_failure_report() -> None:
    with pytest.raises(ContainerRejected) as caught:
        classify(400, {"error": "bad\n" + "x" * 100_000}, "c")
    assert len(str(caught.value)) < 200
    assert "\n" not in str(caught.value)
    with pytest.raises(ContainerError) as failed:
        classify(500, {"error": {"deep": ["x"] * 10_000}}, "c")
    assert len(str(failed.value)) < 200


@pytest.mark.parametrize(
    "payload",
    [None, [1, 2], "text", 7, {"abi_output": True}, {"abi_output": True, "raw_output": 12345}],
)
def test_a_2xx_without_a_usable_body_is_retryable_not_a_success(payload: object) -> None:
    with pytest.raises(ContainerError) as caught:
        classify(200, payload, "c")
    assert caught.value.retryable
    assert caught.value.status == 200


def test_infera_containers_raw_output_is_delivered_as_it_is() -> None:
    out = encode(["string", "uint256"], ["positive", 99])
    answer = {"raw_input": "", "processed_input": "", "raw_output": out.hex(), "processed_output": "", "proof": ""}
    assert classify(200, {**answer, "abi_output": True}, "c").output == out


def test_infernet_five_keys_deliver_abi_encoded_raw_and_processed() -> None:
    # ritual-net/infernet-node src/chain/processor.py: all five keys -> encode(["bytes","bytes"], [raw, processed])
    raw, processed, proof = encode(["string"], ["HI"]), b"ih", b"\x01\x02"
    answer = {
        "raw_input": "",
        "processed_input": None,
        "raw_output": raw.hex(),
        "processed_output": processed.hex(),
        "proof": proof.hex(),
    }
    got = onchain_output(answer, "c")
    assert got.output == encode(["bytes", "bytes"], [raw, processed])
    assert got.proof == proof
    # null fields are empty bytes, as in Infernet's node
    assert onchain_output({**answer, "raw_output": None}, "c").output == encode(["bytes", "bytes"], [b"", processed])


def test_anything_else_delivers_the_python_str_of_the_answer() -> None:
    # Infernet's hello-world answers {"output": ...}; four of the five keys are not enough either
    for answer in (
        {"output": "hello, world!, your input was: {'source': 0}"},
        {"raw_output": "00", "processed_output": None},
        {"error": "x", "n": 1.5, "ok": True, "none": None},
    ):
        got = onchain_output(answer, "c")
        assert got.output == encode(["string"], [str(answer)])
        assert got.proof == b""


def test_retry_after_in_seconds_or_http_date_capped() -> None:
    now = time.time()
    assert retry_after_s("3") == 3.0
    assert retry_after_s("0") == 0.0
    assert retry_after_s("86400") == RETRY_AFTER_MAX_S
    assert retry_after_s("9" * 400) == RETRY_AFTER_MAX_S
    date = email.utils.formatdate(now + 5, usegmt=True)
    assert 3.9 <= (retry_after_s(date, now=now) or 0) <= 5.0
    assert retry_after_s(email.utils.formatdate(now - 100, usegmt=True), now=now) == 0.0
    for unreadable in (None, "", "soon", "-3", "1.5e9", "Mon, 99 Foo 2024"):
        assert retry_after_s(unreadable) is None


# ------------------------------------------------------------------------------ the HTTP edge, real containers


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


def url(server: TestServer) -> str:
    return f"http://{server.host}:{server.port}"


async def test_hello_world_container_is_served_and_ready_without_health(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await serve(create_app("hello", str(tmp_path / "j")))
    try:
        d = HttpDispatcher(session, url(server), timeout_s=5)
        assert await d.healthy()  # 404 on /health: judged by its answers, none failed yet
        input_ = encode(["string"], ["hi"])
        body = chain_request(input_)
        expected = encode(["string"], [str({"output": f"hello, world!, your input was: {body}"})])
        assert (await d.compute("1", input_)).output == expected
        assert d.has_health is False
        assert await d.healthy()
    finally:
        await server.close()


async def test_no_health_container_is_unhealthy_after_a_failed_call_and_healthy_after_a_good_one(
    session: aiohttp.ClientSession,
) -> None:
    answers = [web.Response(status=500), web.json_response({"output": "ok"})]

    async def service_output(request: web.Request) -> web.Response:
        return answers.pop(0)

    app = web.Application()
    app.router.add_post("/service_output", service_output)
    server = await serve(app)
    try:
        d = HttpDispatcher(session, url(server), timeout_s=5)
        d.batches = False
        with pytest.raises(ContainerError):
            await d.compute("1", b"\x01")
        assert not await d.healthy()
        await d.compute("2", b"\x01")
        assert await d.healthy()
    finally:
        await server.close()
    assert not await d.healthy()  # gone: unreachable is never healthy


async def test_429_carries_retry_after_counts_and_shows_a_condition_until_it_answers(
    session: aiohttp.ClientSession,
) -> None:
    CONDITIONS.reset()
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    answers = [
        web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "2"}),
        web.Response(status=429, headers={"Retry-After": when}),
        web.json_response({"raw_output": "abcd", "abi_output": True}),
    ]

    async def service_output(request: web.Request) -> web.Response:
        return answers.pop(0)

    app = web.Application()
    app.router.add_post("/service_output", service_output)
    server = await serve(app)
    try:
        d = HttpDispatcher(session, url(server), timeout_s=5, name="m@1")
        d.batches = False
        with pytest.raises(ContainerError) as first:
            await d.compute("1", b"\x01")
        assert first.value.retry_after_s == 2.0
        assert "slow down" in str(first.value)
        assert CONDITIONS.get("container m@1") is None  # once is not "keeps rate-limiting"
        with pytest.raises(ContainerError) as second:
            await d.compute("1", b"\x01")
        assert 28 <= (second.value.retry_after_s or 0) <= 30
        assert "rate limiting" in (CONDITIONS.get("container m@1") or "")
        assert CONDITIONS.problems(blocking_only=True) == []  # not a reason to be unready
        assert (await d.compute("1", b"\x01")).output == b"\xab\xcd"
        assert CONDITIONS.get("container m@1") is None
        assert CONDITIONS.answers[("container", "retry")] == 2
    finally:
        await server.close()
        CONDITIONS.reset()


async def test_bodies_over_the_cap_are_refused_without_being_held(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("node.dispatch.http.MAX_ANSWER_BYTES", 1024 * 1024)
    seen: list[int] = []

    async def declared(request: web.Request) -> web.Response:
        return web.Response(body=b" " * (4 * 1024 * 1024), content_type="application/json")

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for _ in range(256):  # 64 MiB
                await resp.write(b"0" * 256 * 1024)
                seen.append(1)
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return resp

    for handler in (declared, chunked):
        app = web.Application()
        app.router.add_post("/service_output", handler)
        server = await serve(app)
        try:
            d = HttpDispatcher(session, url(server), timeout_s=10)
            d.batches = False
            with pytest.raises(ContainerError, match="over 1048576 bytes") as caught:
                await d.compute("1", b"\x01")
            assert caught.value.retryable
        finally:
            await server.close()
    assert len(seen) < 256  # the node hung up once past the cap: the container could not send it all


async def test_not_json_and_too_deep_2xx_bodies_are_retryable(session: aiohttp.ClientSession) -> None:
    bodies = [b"<html>", b"[" * 100_000 + b"]" * 100_000, b'{"raw_output": "ab', b""]

    async def service_output(request: web.Request) -> web.Response:
        return web.Response(body=bodies.pop(0), content_type="application/json")

    app = web.Application()
    app.router.add_post("/service_output", service_output)
    server = await serve(app)
    try:
        d = HttpDispatcher(session, url(server), timeout_s=5)
        d.batches = False
        for _ in range(4):
            with pytest.raises(ContainerError) as caught:
                await d.compute("1", b"\x01")
            assert caught.value.retryable
            assert caught.value.status == 200
    finally:
        await server.close()


def test_deeply_nested_json_is_refused_not_a_crash_under_py_eccs_recursion_limit() -> None:
    # py_ecc (imported by the node's chain libraries) raises the recursion limit to 100,000: json.loads of a deep
    # body then overflows the C stack (a segfault) instead of raising. Run in a child so a regression cannot take
    # the test session down with it.
    code = (
        "import sys, py_ecc\n"
        "assert sys.getrecursionlimit() >= 100000\n"
        "from node.dispatch.protocol import parse_json\n"
        "for raw in (b'[' * 500000 + b']' * 500000, '{\"a\":' * 300000 + '1' + '}' * 300000):\n"
        "    try:\n"
        "        parse_json(raw)\n"
        "    except ValueError as exc:\n"
        "        print('refused:', exc)\n"
        "assert parse_json(b'[' * 100 + b']' * 100) is not None\n"
        "assert sys.getrecursionlimit() >= 100000\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("refused: JSON nested deeper than 128") == 2
