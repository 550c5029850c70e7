"""One dispatcher suite, run over HTTP and over MQTT worker pools, against real containers and a real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from eth_abi.abi import decode, encode
from eth_account import Account

from containers.echo.model import EchoModel
from containers.runtime.attest import attestation_digest
from containers.runtime.wire import attestation, chain_request
from containers.runtime.worker import WORKER
from node.devnet import Devnet, free_port
from node.dispatch.calls import Dispatcher
from node.dispatch.http import HttpDispatcher
from node.dispatch.mqtt import MqttDispatcher, MqttHub
from node.dispatch.protocol import Output
from node.errors import ContainerError, ContainerRejected
from tests.faults.faulty_container import create_app as infernet_like_app
from tests.integration.conftest import FlakyModel, base_url, start_server, unique

TRANSPORTS = ["http", "mqtt"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def dispatcher(
    transport: str, server: TestServer, session: aiohttp.ClientSession, hub: MqttHub, *, timeout_s: float = 30
) -> Dispatcher:
    if transport == "http":
        return HttpDispatcher(session, base_url(server), timeout_s=timeout_s)
    from containers.runtime.server import STATE

    return MqttDispatcher(hub, server.app[STATE].model.name, timeout_s=timeout_s, max_dispatches=2)


async def test_compute_returns_the_models_abi_output(
    transport: str, classify_server: TestServer, session: aiohttp.ClientSession, hub: MqttHub
) -> None:
    d = dispatcher(transport, classify_server, session, hub)
    out = (await d.compute(unique("job"), encode(["string"], ["I absolutely love this, it is wonderful"]))).output
    assert decode(["string", "uint256"], out)[0] == "positive"


async def test_echo_round_trips_bytes(
    transport: str, echo_server: TestServer, session: aiohttp.ClientSession, hub: MqttHub
) -> None:
    d = dispatcher(transport, echo_server, session, hub)
    assert (await d.compute(unique("job"), b"\x00\xffpayload")).output == b"\x00\xffpayload"


async def test_rejected_input_is_not_retryable(
    transport: str, classify_server: TestServer, session: aiohttp.ClientSession, hub: MqttHub
) -> None:
    d = dispatcher(transport, classify_server, session, hub)
    with pytest.raises(ContainerRejected, match="rejected the input: cannot decode input as") as info:
        await d.compute(unique("job"), b"\xde\xad\xbe\xef")
    assert info.value.status == 400
    assert not info.value.retryable


async def test_model_error_is_retryable(
    transport: str, broker: str, session: aiohttp.ClientSession, hub: MqttHub
) -> None:
    server = await start_server(FlakyModel(failures=1, name=unique("flaky")), mqtt_url=broker)
    try:
        d = dispatcher(transport, server, session, hub)
        with pytest.raises(ContainerError, match="simulated model failure") as info:
            await d.compute(unique("job"), b"\x01")
        assert info.value.retryable
        assert info.value.status == 500
        assert (await d.compute(unique("job"), b"\x01")).output == b"\x01"
    finally:
        await server.close()


async def test_no_container_is_a_retryable_error(transport: str, session: aiohttp.ClientSession, hub: MqttHub) -> None:
    if transport == "http":
        d: Dispatcher = HttpDispatcher(session, f"http://127.0.0.1:{free_port()}", timeout_s=5)
        expected = "is down: Cannot connect"  # ContainerUnavailable: the scheduler waits instead of using attempts
    else:
        d = MqttDispatcher(hub, unique("nobody-serves-this"), timeout_s=0.3, max_dispatches=2)
        expected = "no worker of the .* pool answered after 2 dispatches"
    with pytest.raises(ContainerError, match=expected) as info:
        await d.compute(unique("job"), b"\x01")
    assert info.value.retryable


async def test_a_redelivered_job_is_computed_once_per_worker(broker: str, hub: MqttHub) -> None:
    server = await start_server(EchoModel(unique("echo")), mqtt_url=broker)
    try:
        worker = server.app[WORKER]
        model = worker.state.model.name
        first = await hub.request(model, "same-job", chain_request(b"\x07"), timeout_s=10)
        second = await hub.request(model, "same-job", chain_request(b"\x07"), timeout_s=10)
        assert first == second
        assert first["status"] == 200
        assert worker.computed == 1
    finally:
        await server.close()


async def test_http_health_reflects_the_container(session: aiohttp.ClientSession, echo_url: str) -> None:
    assert await HttpDispatcher(session, echo_url, timeout_s=5).healthy()
    assert not await HttpDispatcher(session, f"http://127.0.0.1:{free_port()}", timeout_s=5).healthy()


async def test_workers_and_node_authenticate_to_a_protected_broker(tmp_path: Path) -> None:
    with Devnet(tmp_path) as dev:
        _, url = dev.start_mosquitto(users={"node": "node-secret", "worker": "worker-secret"})
        server = await start_server(
            EchoModel(unique("echo")), mqtt_url=url, username="worker", password="worker-secret"
        )
        hub = MqttHub(url, "auth-node", username="node", password="node-secret")
        task = asyncio.create_task(hub.run())
        try:
            await asyncio.wait_for(hub._connected.wait(), 30)
            d = MqttDispatcher(hub, server.app[WORKER].state.model.name, timeout_s=10, max_dispatches=1)
            assert (await d.compute(unique("job"), b"\x42")).output == b"\x42"
            intruder = MqttHub(url, "intruder", username="node", password="wrong")
            intruder_task = asyncio.create_task(intruder.run())
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(intruder._connected.wait(), 2)
            intruder_task.cancel()
            await asyncio.gather(intruder_task, return_exceptions=True)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.close()


async def test_http_calls_that_overlap_share_round_trips(session: aiohttp.ClientSession, echo_url: str) -> None:
    d = HttpDispatcher(session, echo_url, timeout_s=30)
    inputs = [f"input {i}".encode() for i in range(40)]
    outputs = await asyncio.gather(*(d.compute(unique("job"), i) for i in inputs))
    assert [o.output for o in outputs] == inputs  # each call gets its own answer back
    assert d.batches is True
    # two round trips leave at once (one input each); the other 38 wait for them and go 32, then 6
    assert d.round_trips == 4


async def test_one_bad_input_in_a_shared_round_trip_fails_only_itself(
    session: aiohttp.ClientSession, classify_url: str
) -> None:
    d = HttpDispatcher(session, classify_url, timeout_s=30)
    good = encode(["string"], ["What a fantastic movie, truly great"])
    results = await asyncio.gather(
        *(d.compute(unique("job"), i) for i in [good, good, b"\xde\xad", good, good]), return_exceptions=True
    )
    assert d.round_trips < 5
    assert isinstance(results[2], ContainerRejected)
    assert "cannot decode input" in str(results[2])
    for out in results[:2] + results[3:]:
        assert isinstance(out, Output)
        assert decode(["string", "uint256"], out.output)[0] == "positive"


async def test_http_uses_single_calls_with_a_container_that_has_no_batch_path(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = TestServer(infernet_like_app(str(tmp_path / "journal")))
    await server.start_server()
    try:
        d = HttpDispatcher(session, base_url(server), timeout_s=30)
        inputs = [f"ok-{i}".encode() for i in range(10)]
        assert [o.output for o in await asyncio.gather(*(d.compute(unique("job"), i) for i in inputs))] == inputs
        assert d.batches is False
        assert (await d.compute(unique("job"), b"ok-last")).output == b"ok-last"
        # the two first round trips met the 404; every input was then computed once, on its own call
        journal = (tmp_path / "journal").read_text().split()
        assert sorted(bytes.fromhex(h) for h in journal) == sorted([*inputs, b"ok-last"])
        assert d.round_trips == 2 + 11
    finally:
        await server.close()


async def test_an_attestation_comes_back_with_each_output_over_both_transports(
    transport: str, broker: str, session: aiohttp.ClientSession, hub: MqttHub
) -> None:
    key, digest = bytes.fromhex("5e" * 32), bytes.fromhex("d1" * 32)
    server = await start_server(
        EchoModel(unique("echo-attested")), mqtt_url=broker, attestation_key=key, model_digest=digest
    )
    try:
        d = dispatcher(transport, server, session, hub)
        coordinator, node = "0x" + "c0" * 20, "0x" + "0d" * 20
        inputs = [f"input {i}".encode() for i in range(12)]  # overlapping calls: one HTTP round trip carries several
        outputs = await asyncio.gather(
            *(d.compute(unique("job"), i, attestation(31337, coordinator, n, node)) for n, i in enumerate(inputs))
        )
        for n, (input_, out) in enumerate(zip(inputs, outputs, strict=True)):
            assert out.output == input_
            named, signature = decode(["bytes32", "bytes"], out.proof)
            assert named == digest
            signed = attestation_digest(31337, coordinator, n, node, input_, input_, digest)
            assert Account._recover_hash(signed, signature=signature) == Account.from_key(key).address
        assert (await d.compute(unique("job"), b"plain")).proof == b""
    finally:
        await server.close()
