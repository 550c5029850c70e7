"""Delegated requests: the EIP-712 typing read from the compiled ABIs (checked against a deployed coordinator's own
digest), a request the node already delivered (the store drops its `RequestCreated`), and the delegated path's own
idempotence and retries, over a scripted RPC and container (no chain)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_account import Account
from eth_utils.crypto import keccak

from node.api.delegated import DelegatedRequests, NonceUsedError
from node.api.eip712 import DelegatedTyping, recover
from node.api.jobs import JobInputError
from node.chain.contracts import CoordinatorAbi, load_artifact
from node.chain.rpc import RpcError
from node.errors import ConfigError, ContainerError
from node.jobs.store import StoredTx
from tests.unit.test_dispatch_retry import Clock, Scripted, failed, route
from tests.unit.test_store import ADDR, request, store

ABI = CoordinatorAbi.from_artifacts()
CONSUMER_ABI = load_artifact("IDelegatingConsumer").abi
TYPING = DelegatedTyping.from_abi(ABI, CONSUMER_ABI)

#: A request and what the coordinator a devnet deploys (`Devnet.deploy()`: at 0xe7f1…0512 on anvil's chain 31337)
#: answered for it, read with web3: `delegatedRequestDigest(req)` and `DELEGATED_REQUEST_TYPEHASH()`. The digest
#: covers the domain, the type and every field's encoding; tests/e2e/test_rest_api.py checks it on a live chain too.
GOLDEN_COORDINATOR = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
GOLDEN_REQUEST: dict[str, Any] = {
    "consumer": "0x000000000000000000000000000000000000c0DE",
    "modelId": "0x" + "11" * 32,
    "inputHash": "0x" + "22" * 32,
    "callbackGasLimit": 200_000,
    "redundancy": 1,
    "token": "0x" + "00" * 20,
    "feePerNode": str(10**15),
    "nonce": 7,
    "expiry": 1_900_000_000,
    "deadline": 1_900_000_600,
}
GOLDEN_DIGEST = "786d2129ac63145dae55bc9f19b14938bcc1c8cb4a5108bc7131a7f2e2c251c7"
GOLDEN_TYPEHASH = "695d16950f5c7d0fb9b4c1f2d9a7c691c29a08b5c205563b075fc2ad899392a7"

SIGNER = Account.from_key("0x" + "42" * 32)


def body(req: dict[str, Any], input_: bytes = b"", signature: bytes = b"\x00" * 65) -> dict[str, Any]:
    return {"request": req, "input": "0x" + input_.hex(), "signature": "0x" + signature.hex()}


# ------------------------------------------------------------------------------------------ typing from the ABI


def test_the_digest_is_the_coordinators() -> None:
    req, _, _ = TYPING.parse(body(GOLDEN_REQUEST))
    assert TYPING.digest(req, 31337, GOLDEN_COORDINATOR).hex() == GOLDEN_DIGEST
    assert keccak(text=TYPING.type_string).hex() == GOLDEN_TYPEHASH
    assert TYPING.digest(req, 1, GOLDEN_COORDINATOR).hex() != GOLDEN_DIGEST  # replay-safe across chains


def test_the_struct_topic_and_selector_come_from_the_abis() -> None:
    assert TYPING.name == "DelegatedRequest"
    assert [name for name, _ in TYPING.fields] == list(GOLDEN_REQUEST)
    assert TYPING.created_topic == keccak(text="DelegatedRequestCreated(uint256,address,uint256)")
    assert TYPING.signer_selector == keccak(text="delegatedSigner()")[:4]


def test_a_signature_by_eip712_tooling_recovers_its_signer() -> None:
    req, _, _ = TYPING.parse(body(GOLDEN_REQUEST))
    domain = {"name": "Infera Coordinator", "version": "1", "chainId": 31337, "verifyingContract": ADDR}
    types = {TYPING.name: [{"name": n, "type": t} for n, t in TYPING.fields]}
    signed = Account.sign_typed_data(SIGNER.key, domain_data=domain, message_types=types, message_data=req)
    assert recover(TYPING.digest(req, 31337, ADDR), bytes(signed.signature)) == SIGNER.address


def test_a_struct_the_node_cannot_check_stops_it_at_start() -> None:
    abi = copy.deepcopy(ABI.abi)
    deliver = next(e for e in abi if e.get("name") == "deliverDelegated")
    deliver["inputs"][0]["components"].append({"name": "memo", "type": "string", "internalType": "string"})
    with pytest.raises(ConfigError, match="memo of type string"):
        DelegatedTyping.from_abi(CoordinatorAbi(abi), CONSUMER_ABI)
    with pytest.raises(ConfigError, match="delegatedSigner"):
        DelegatedTyping.from_abi(ABI, [])


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"nonce": None}, "missing ['nonce']"),
        ({"memo": "x"}, "unknown ['memo']"),
        ({"redundancy": 2**16}, "request.redundancy must be an integer in 0..2^16-1 (uint16)"),
        ({"feePerNode": -1}, "request.feePerNode must be an integer"),
        ({"expiry": True}, "request.expiry must be an integer"),
        ({"modelId": "0x11"}, "request.modelId must be 32 bytes, got 1"),
        ({"consumer": "0x1234"}, "request.consumer must be an address"),
    ],
)
def test_a_request_is_checked_field_by_field_against_the_struct(change: dict[str, Any], says: str) -> None:
    req = {k: v for k, v in {**GOLDEN_REQUEST, **change}.items() if v is not None}
    with pytest.raises(JobInputError) as caught:
        TYPING.parse(body(req))
    assert says in str(caught.value)


# --------------------------------------------------------------------------------- a request already delivered


def test_a_request_the_node_created_and_delivered_itself_is_never_a_job(store_at: str) -> None:
    s = store(store_at)
    s.add_tx(StoredTx(ADDR, 0, ["0xde1e"], b"raw", {}, [], sent_block=1), [])  # the deliverDelegated call
    own = dataclasses.replace(request(1), tx_hash="0xDE1E")  # its RequestCreated (hashes compare in any case)
    other = dataclasses.replace(request(2), tx_hash="0xbeef")
    assert [j.request_id for j in s.record_requests([(own, "m"), (other, "m")], cursor=11)] == [2]
    s.close()
    reopened = store(store_at)  # seen again after a restart (a backfill): still not a job
    assert reopened.record_requests([(dataclasses.replace(request(3), tx_hash="0xde1e"), "m")], cursor=12) == []
    assert {j.request_id for j in reopened.resumable()} == {2}
    reopened.close()


# ------------------------------------------------------------------------------------ the delegated path itself


class Rpc:
    """Answers `eth_call` (the simulation) with success, or with a revert of the coordinator's error `revert`."""

    def __init__(self) -> None:
        self.revert: str | None = None
        self.calls = 0

    async def request(self, method: str, params: list[Any]) -> Any:
        self.calls += 1
        if self.revert is None:
            return "0x"
        selector = next(d.selector for d in ABI.reverts.definitions if d.name == self.revert)
        raise RpcError(method, 3, "execution reverted", data="0x" + selector.hex() + "00" * 32)


class Chain:
    """`TxManager.send_call`'s stand-in: a sent transaction whose receipt holds the coordinator's
    `DelegatedRequestCreated` for request 99."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, data: bytes, gas: int, what: str, sender: str) -> tuple[StoredTx, asyncio.Future[Any]]:
        self.sent.append(data)
        mined: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        topics = [TYPING.created_topic, (99).to_bytes(32, "big"), bytes(32)]
        mined.set_result(
            {"transactionHash": "0x" + "ab" * 32, "blockNumber": 5, "status": 1, "logs": [{"topics": topics}]}
        )
        return StoredTx(ADDR, 0, ["0x" + "ab" * 32], b"raw", {}, [], sent_block=1), mined


def signed(input_: bytes, nonce: int) -> dict[str, Any]:
    req = {**GOLDEN_REQUEST, "inputHash": "0x" + keccak(input_).hex(), "nonce": nonce}
    checked, _, _ = TYPING.parse(body(req))
    signature = SIGNER.unsafe_sign_hash(TYPING.digest(checked, 31337, ADDR))
    return body(req, input_, bytes(signature.signature))


def delegated(rpc: Rpc, chain: Chain, container: Scripted) -> DelegatedRequests:
    clock = Clock()
    routes = {bytes.fromhex("11" * 32): route(container, clock)}
    return DelegatedRequests(rpc, ABI, CONSUMER_ABI, ADDR, 31337, ADDR, routes, chain.send, keep=10)


async def finished(api: DelegatedRequests) -> None:
    await asyncio.gather(*api._tasks)


async def test_a_request_is_computed_with_retries_then_created_and_delivered_once() -> None:
    output = encode(["string"], ["positive"])
    chain, container = Chain(), Scripted(failed(503, 1.0), output)
    api = delegated(Rpc(), chain, container)
    job = await api.submit("alice", signed(b"input", nonce=1))
    await finished(api)
    assert (job.status, job.request_id, job.block_number) == ("completed", 99, 5), job.error
    assert container.calls == 2  # the 503 was retried, within the request's expiry
    assert len(chain.sent) == 1
    assert chain.sent[0].endswith(output + bytes(-len(output) % 32))  # the output is the calldata's last argument


async def test_the_same_signed_request_twice_is_a_replay() -> None:
    chain, container = Chain(), Scripted(b"\x01")
    api = delegated(Rpc(), chain, container)
    twin = signed(b"input", nonce=2)
    await api.submit("alice", twin)
    with pytest.raises(NonceUsedError, match="already being served here"):  # while the first is in flight
        await api.submit("alice", twin)
    await finished(api)
    assert (container.calls, len(chain.sent)) == (1, 1)


async def test_a_nonce_the_coordinator_has_seen_is_a_replay_and_nothing_runs() -> None:
    rpc, chain, container = Rpc(), Chain(), Scripted()
    rpc.revert = "NonceUsed"
    api = delegated(rpc, chain, container)
    with pytest.raises(NonceUsedError, match="was used already"):
        await api.submit("alice", signed(b"input", nonce=3))
    assert (api.accepted, container.calls, chain.sent) == (0, 0, [])


async def test_a_container_that_keeps_failing_fails_the_request_and_sends_nothing() -> None:
    chain, container = Chain(), Scripted(failed(500), failed(500), failed(500))
    api = delegated(Rpc(), chain, container)
    job = await api.submit("alice", signed(b"input", nonce=4))
    await finished(api)
    assert job.status == "failed"
    assert "HTTP 500" in str(job.error)
    assert ContainerError.__name__ in str(job.error)
    assert (container.calls, chain.sent) == (3, [])


async def test_a_delegated_request_is_answered_from_the_store_by_the_next_run(store_at: str) -> None:
    """Each status is recorded as it changes; a new run (a restart, or another replica) answers `GET` from the
    store, ends what the last run left unsent with what to check, and leaves a sent one to its transaction."""
    from node.jobs.apijobs import ApiJobTable

    table = ApiJobTable(store(store_at))
    chain, container = Chain(), Scripted(encode(["string"], ["positive"]))
    clock, routes = Clock(), {}
    routes[bytes.fromhex("11" * 32)] = route(container, clock)
    api = DelegatedRequests(Rpc(), ABI, CONSUMER_ABI, ADDR, 31337, ADDR, routes, chain.send, keep=10, table=table)
    job = await api.submit("alice", signed(b"input", nonce=7))
    await finished(api)
    assert job.status == "completed"
    table.save("delegated", "left-running", "alice", "m", "running", {"id": "left-running", "status": "running"})
    table.save("delegated", "left-sent", "alice", "m", "sent", {"id": "left-sent", "status": "sent", "tx_hash": "0x1"})

    reopened = ApiJobTable(store(store_at))
    after = DelegatedRequests(Rpc(), ABI, CONSUMER_ABI, ADDR, 31337, ADDR, routes, chain.send, keep=10, table=reopened)
    assert after.resume() == 1
    done = after.get("alice", job.id)
    assert done is not None
    assert done.view() == job.view()  # completed, with its request id and block, from the store
    assert after.get("bob", job.id) is None  # another token's
    ended = after.get("alice", "left-running")
    assert ended is not None
    assert ended.view()["status"] == "failed"
    assert "check the consumer's nonce" in ended.view()["error"]
    sent = after.get("alice", "left-sent")
    assert sent is not None
    assert sent.view() == {"id": "left-sent", "status": "sent", "tx_hash": "0x1"}
