"""Attestation of a container's outputs (containers/runtime/attest.py, the runtime's `requires_proof` handling): the
digest the verifier checks, the key file's checks, and the container's answers with and without a key, through the
node's one call path (`ModelRoute` over `HttpDispatcher`)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from eth_abi.abi import decode, encode
from eth_account import Account
from eth_utils.crypto import keccak

from containers.echo.model import EchoModel
from containers.runtime.attest import (
    AttestationError,
    Attester,
    attestation_digest,
    files_digest,
    read_key_file,
)
from containers.runtime.server import STATE, create_app
from containers.runtime.wire import NO_ATTESTATION_KEY, attestation
from node.config import ModelConfig
from node.dispatch.calls import ModelRoute
from node.dispatch.http import HttpDispatcher
from node.errors import ContainerRejected

KEY = "0x" + "4c" * 32
DIGEST = bytes.fromhex("ab" * 32)
COORDINATOR = "0x" + "c0" * 20
NODE = "0x" + "0d" * 20
#: secp256k1's group order: a signature's `s` must be at most half of it (the verifier refuses malleable copies).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def key_file(tmp_path: Path, mode: int = 0o600, text: str = KEY) -> Path:
    path = tmp_path / "attester.key"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def test_the_digest_is_the_personal_sign_hash_of_the_abi_encoded_attestation() -> None:
    """Built here from the spec, independently of attest.py's helpers."""
    inner = keccak(
        encode(
            ["bytes32", "uint256", "address", "uint256", "address", "bytes32", "bytes32", "bytes32"],
            [keccak(text="InferaAttestation.v1"), 31337, COORDINATOR, 7, NODE, keccak(b"in"), keccak(b"out"), DIGEST],
        )
    )
    expected = keccak(b"\x19Ethereum Signed Message:\n32" + inner)
    assert attestation_digest(31337, COORDINATOR, 7, NODE, b"in", b"out", DIGEST) == expected


def test_a_signature_recovers_to_the_attester_with_v_27_or_28_and_low_s(tmp_path: Path) -> None:
    attester = Attester.from_file(key_file(tmp_path), DIGEST)
    assert attester.address == Account.from_key(KEY).address
    for rid in range(20):
        signature = attester.sign(31337, COORDINATOR, rid, NODE, b"in", b"out")
        assert len(signature) == 65
        assert signature[64] in (27, 28)
        assert int.from_bytes(signature[32:64], "big") <= SECP256K1_N // 2
        digest = attestation_digest(31337, COORDINATOR, rid, NODE, b"in", b"out", DIGEST)
        assert Account._recover_hash(digest, signature=signature) == attester.address
    proof = attester.proof(attestation(31337, COORDINATOR, 3, NODE), b"in", b"out")
    digest, signature = decode(["bytes32", "bytes"], proof)
    assert digest == DIGEST
    assert signature == attester.sign(31337, COORDINATOR, 3, NODE, b"in", b"out")
    assert KEY[2:] not in repr(attester)


def test_a_key_file_readable_by_others_is_refused_with_the_chmod_to_run(tmp_path: Path) -> None:
    path = key_file(tmp_path, 0o644)
    with pytest.raises(
        AttestationError, match=r"readable or writable by others \(mode 0644\); run `chmod 600 .*attester.key`"
    ):
        read_key_file(path)
    assert read_key_file(key_file(tmp_path, 0o400)) == bytes.fromhex(KEY[2:])


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o610, 0o604])
def test_a_key_file_writable_or_readable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(AttestationError, match=rf"readable or writable by others \(mode {mode:04o}\); run `chmod 600"):
        read_key_file(key_file(tmp_path, mode))


@pytest.mark.parametrize(
    "secret",
    [
        "00" * 32,  # zero: no key
        "ff" * 32,  # above the curve order
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",  # the curve order n itself
    ],
)
def test_a_key_outside_the_curve_range_is_refused_at_start_without_its_content(tmp_path: Path, secret: str) -> None:
    with pytest.raises(AttestationError, match="not hold a valid secp256k1 private key") as raised:
        read_key_file(key_file(tmp_path, text="0x" + secret + "\n"))
    assert secret not in str(raised.value)
    assert "instead of" not in str(raised.value)


def test_the_largest_key_below_the_curve_order_is_accepted(tmp_path: Path) -> None:
    top = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140"
    assert read_key_file(key_file(tmp_path, text=top)) == bytes.fromhex(top)


def test_a_directory_as_key_file_is_refused_clearly(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    with pytest.raises(AttestationError, match=r"keys is a directory; give the file that holds the key"):
        read_key_file(folder)


def test_a_key_file_that_is_not_text_is_refused_without_echoing_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "attester.key"
    content = b"\xff\xfe\xc3(secret"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(AttestationError, match="is not text") as raised:
        read_key_file(path)
    message = str(raised.value)
    assert "secret" not in message
    assert "\\x" not in message
    assert "xff" not in message
    assert "0xc3" not in message
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_a_missing_or_malformed_key_file_is_refused_without_its_content(tmp_path: Path) -> None:
    with pytest.raises(AttestationError, match="not found"):
        read_key_file(tmp_path / "nothing")
    secret = "ff" * 31  # one byte short
    with pytest.raises(AttestationError, match="does not hold a 32-byte hex private key") as raised:
        read_key_file(key_file(tmp_path, text=secret))
    assert secret not in str(raised.value)


def test_the_weight_digest_covers_names_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "a.bin").write_bytes(b"weights")
    first = files_digest([tmp_path / "w"])
    (tmp_path / "w" / "a.bin").write_bytes(b"weightz")
    assert files_digest([tmp_path / "w"]) != first
    with pytest.raises(AttestationError, match="give --model-digest"):
        files_digest([tmp_path / "empty"])


def test_each_weight_files_own_sha256_comes_from_the_same_read(tmp_path: Path) -> None:
    (tmp_path / "w" / "sub").mkdir(parents=True)
    files = {"a.bin": os.urandom(3 << 20), "sub/b.safetensors": b"", "c.gguf": os.urandom(1000)}
    for name, data in files.items():
        (tmp_path / "w" / name).write_bytes(data)
    per_file: dict[str, str] = {}
    assert files_digest([tmp_path / "w"], per_file) == files_digest([tmp_path / "w"])
    assert per_file == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def test_a_container_with_a_key_file_readable_by_others_does_not_start(tmp_path: Path) -> None:
    path = key_file(tmp_path, 0o640)
    run = subprocess.run(
        [sys.executable, "-m", "containers.echo", "--port", "0", "--model-digest", DIGEST.hex()],
        env={**os.environ, "INFERA_ATTESTATION_KEY_FILE": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert f"run `chmod 600 {path}`" in run.stderr
    assert KEY[2:] not in run.stderr + run.stdout


def test_a_container_with_a_zero_key_does_not_start(tmp_path: Path) -> None:
    path = key_file(tmp_path, text="00" * 32)
    run = subprocess.run(
        [sys.executable, "-m", "containers.echo", "--port", "0", "--model-digest", DIGEST.hex()],
        env={**os.environ, "INFERA_ATTESTATION_KEY_FILE": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "does not hold a valid secp256k1 private key" in run.stderr


async def _serve(key: bytes | None) -> TestServer:
    server = TestServer(create_app(EchoModel("echo"), attestation_key=key, model_digest=DIGEST), host="127.0.0.1")
    await server.start_server()
    await server.app[STATE].ready.wait()
    return server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _route(server: TestServer, session: aiohttp.ClientSession) -> ModelRoute:
    url = str(server.make_url("")).rstrip("/")
    model = ModelConfig(name="echo", url=url, max_attempts=1, attests=True)
    return ModelRoute(model, HttpDispatcher(session, url, timeout_s=10, name="echo"))


async def test_a_container_with_a_key_answers_a_proof_the_verifier_would_accept(
    session: aiohttp.ClientSession,
) -> None:
    server = await _serve(bytes.fromhex(KEY[2:]))
    try:
        route = _route(server, session)
        context = attestation(31337, COORDINATOR, 2**200, NODE)
        results = [await route.call("1", b"hello", attestation=context) for _ in range(2)]
        plain = await route.call("2", b"hello")
    finally:
        await server.close()
    for result in results:
        assert result.output == b"hello"
        digest, signature = decode(["bytes32", "bytes"], result.proof)
        assert digest == DIGEST
        signed = attestation_digest(31337, COORDINATOR, 2**200, NODE, b"hello", b"hello", DIGEST)
        assert Account._recover_hash(signed, signature=signature) == Account.from_key(KEY).address
    assert plain.proof == b""


async def test_a_container_without_a_key_refuses_a_proof_with_a_4xx_that_says_so(
    session: aiohttp.ClientSession,
) -> None:
    server = await _serve(None)
    try:
        route = _route(server, session)
        with pytest.raises(ContainerRejected, match="this container has no attestation key") as raised:
            await route.call("1", b"hello", attestation=attestation(1, COORDINATOR, 1, NODE))
        assert raised.value.status == 400
        assert NO_ATTESTATION_KEY.startswith("this container has no attestation key")
        url = str(server.make_url("")).rstrip("/")
        async with session.post(url + "/service_output", json={"data": "00", "requires_proof": True}) as resp:
            assert resp.status == 400
    finally:
        await server.close()


async def test_a_proof_request_without_a_usable_attestation_is_a_400(session: aiohttp.ClientSession) -> None:
    server = await _serve(bytes.fromhex(KEY[2:]))
    url = str(server.make_url("")).rstrip("/")
    try:
        bodies = [
            {"data": "00", "requires_proof": True},
            {"data": "00", "requires_proof": True, "attestation": {**attestation(1, COORDINATOR, 1, NODE), "node": 1}},
            {"source": 1, "destination": 1, "data": {"data": "x"}, "requires_proof": True},
        ]
        for body in bodies:
            async with session.post(url + "/service_output", json=body) as resp:
                assert resp.status == 400, body
                assert (await resp.json())["error"]
    finally:
        await server.close()
