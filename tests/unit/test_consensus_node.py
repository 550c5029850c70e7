"""Consensus requests on the node's side, as pure logic (node/chain/consensus.py, node/chain/delivery.py,
node/chain/contracts.py, node/jobs/outcomes.py, node/api/receipts.py): the commitment and what it binds, that a
consensus job's first action is `commit` with that commitment, that a mined `Committed` settles it, which jobs the
revealer picks up, and that a receipt's signature names the node. The same on a real chain: tests/e2e/test_consensus.py.
"""

from __future__ import annotations

import json
import random

import pytest
from eth_abi.abi import decode, encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from node.api import receipts
from node.chain import commitments, delivery
from node.chain.contracts import ZERO_ADDRESS, CoordinatorAbi, InferenceRequest
from node.commands.receipts import checks
from node.jobs.outcomes import Outcomes
from node.jobs.states import JobState
from node.jobs.store import Job, JobStore

COORDINATOR = to_checksum_address("0x" + "c0" * 20)
NODE = to_checksum_address("0x" + "0a" * 20)
ADDR = to_checksum_address("0x" + "55" * 20)
ABI = CoordinatorAbi.from_artifacts().at(COORDINATOR)
MODULE = commitments.module_address(COORDINATOR)


def request(rid: int, verifier: str = MODULE, input_: bytes = b"in") -> InferenceRequest:
    return InferenceRequest(
        rid, b"\x01" * 32, ADDR, input_, ADDR, 10**15, 100_000, 3, 2**40, verifier, 10, "0xaa", "0x", 0
    )


def test_the_module_address_is_the_coordinators_first_create() -> None:
    # CREATE address of (0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0, nonce 1): Ethereum's documented example
    # (the yellow paper's RLP rule; the same pair as in ethers' getContractAddress tests).
    assert commitments.module_address("0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0") == to_checksum_address(
        "0x343c43a37d37dff08ae8c4a11544c718abb4fcf8"
    )
    assert ABI.consensus_module == MODULE
    assert ABI.is_consensus(MODULE)
    assert ABI.is_consensus(MODULE.lower())
    assert not ABI.is_consensus(ZERO_ADDRESS)
    assert not CoordinatorAbi.from_artifacts().is_consensus(MODULE)  # not bound to a coordinator: none is


def test_a_commitment_binds_chain_coordinator_request_node_output_and_salt() -> None:
    rng = random.Random(19)
    for _ in range(50):
        salt = rng.randbytes(32)
        output = rng.randbytes(rng.randrange(0, 300))
        base = (31337, COORDINATOR, rng.randrange(2**64), NODE, output, salt)
        c = commitments.commitment(*base)
        word = encode(
            ["uint256", "address", "uint256", "address", "bytes32", "bytes32"],
            [base[0], base[1], base[2], base[3], keccak(output), salt],
        )
        assert c == keccak(word)  # the coordinator's `commitmentFor` (checked against it on anvil in e2e)
        changed = [
            (31338, *base[1:]),
            (base[0], ADDR, *base[2:]),
            (*base[:2], base[2] + 1, *base[3:]),
            (*base[:3], ADDR, *base[4:]),
            (*base[:4], output + b"\x00", salt),
            (*base[:5], rng.randbytes(32)),
        ]
        assert all(commitments.commitment(*other) != c for other in changed)
    with pytest.raises(ValueError, match="32 bytes, not 31"):
        commitments.commitment(1, COORDINATOR, 1, NODE, b"x", b"\x00" * 31)


def test_a_fresh_proof_is_a_commitment_to_the_output_under_a_new_secret_salt() -> None:
    proofs = [commitments.new_proof(1, COORDINATOR, 7, NODE, b"yes") for _ in range(20)]
    assert len({p[32:] for p in proofs}) == 20  # a new salt each time: nobody can guess "yes" from a commitment
    for proof in proofs:
        commitment, salt = commitments.split_proof(proof)
        assert commitment == commitments.commitment(1, COORDINATOR, 7, NODE, b"yes", salt)
    for bad in (b"", b"\x00" * 63, b"\x00" * 65, b"\x00" * 192):
        with pytest.raises(ValueError, match="consensus proof is 64 bytes"):
            commitments.split_proof(bad)


def test_a_consensus_jobs_first_action_is_commit_alone_at_its_own_gas() -> None:
    proof = commitments.new_proof(1, COORDINATOR, 5, NODE, b"out")
    job = Job(request(5), "m", state=JobState.COMPUTED, output=b"out", proof=proof)
    assert delivery.with_proof(job)  # so it goes alone, from the first key, as a verified delivery does
    data = delivery.calldata(ABI, [job])
    assert data[:4] == ABI.selector("commit")
    assert decode(["uint256", "bytes32"], data[4:]) == (5, proof[:32])
    assert delivery.describe([job], ABI) == "commit(5)"
    assert delivery.gas_limit([job], ABI) == delivery.COMMIT_GAS
    # A failure report of a consensus request is a plain report; another verifier's request is deliverWithProof.
    failed = Job(request(6), "m", state=JobState.COMPUTED, failure="model blew up")
    assert delivery.calldata(ABI, [failed])[:4] == ABI.selector("reportFailure")
    other = Job(request(7, ADDR), "m", state=JobState.COMPUTED, output=b"out", proof=b"\x01")
    assert delivery.calldata(ABI, [other])[:4] == ABI.selector("deliverWithProof")
    assert delivery.gas_limit([other], ABI) > delivery.VERIFIER_GAS


def _log(event: str, rid: int, node: str, data: bytes, emitter: str = COORDINATOR) -> dict[str, object]:
    return {
        "address": emitter,
        "topics": [
            ABI.topic(event),
            "0x" + rid.to_bytes(32, "big").hex(),
            "0x" + bytes.fromhex(node[2:]).rjust(32, b"\0").hex(),
        ],
        "data": "0x" + data.hex(),
    }


def test_a_mined_commit_reads_as_committed_and_only_from_the_coordinator() -> None:
    logs = [_log("Committed", 3, NODE, b"\x11" * 32), _log("Committed", 4, NODE, b"\x11" * 32, emitter=ADDR)]
    assert ABI.delivery_outcomes(logs, NODE, COORDINATOR) == {3: "committed"}
    assert ABI.delivery_outcomes(logs, ADDR, COORDINATOR) == {}  # another node's commit is not ours


def test_the_revealer_picks_up_committed_and_in_flight_reveals_but_not_settled_ones(store_at: str) -> None:
    store = JobStore(store_at, chain_id=1, coordinator=COORDINATOR)
    outcomes = Outcomes(store)
    states = {
        1: commitments.COMMITTED,
        2: f"{commitments.REVEAL_SENT} 0xab",
        3: f"{commitments.REVEALED} 0xcd",
        4: commitments.AGREED,
        5: commitments.DISSENTED,
        6: commitments.LATE,
        7: commitments.NO_QUORUM,
        8: "pending until 5",
        9: commitments.REVEALING,
    }
    for rid, state in states.items():
        outcomes.set(rid, verification=state)
    found = dict(
        outcomes.consensus_due(
            64, (commitments.COMMITTED, commitments.REVEALING, commitments.REVEAL_SENT, commitments.REVEALED)
        )
    )
    assert found == {rid: states[rid] for rid in (1, 2, 3, 9)}
    assert outcomes.consensus_due(2, (commitments.COMMITTED, commitments.REVEALED)) == [
        (1, commitments.COMMITTED),
        (3, states[3]),
    ]
    store.close()


def test_a_receipt_is_signed_by_the_node_and_names_the_on_chain_hashes(store_at: str) -> None:
    account = Account.from_key(b"\x07" * 32)
    store = JobStore(store_at, chain_id=31337, coordinator=COORDINATOR)
    job = store.add(request(11, input_=b"the input"), "classify/x@1")
    assert job is not None
    store.update(job, JobState.RUNNING, attempts=1)
    store.update(job, JobState.COMPUTED, output=b"the output")
    Outcomes(store).set(11, verification=commitments.COMMITTED)
    digest = b"\xd1" * 32
    receipt = receipts.build_receipt(store, 11, account.address, {"classify/x@1": digest})
    assert receipt is not None
    assert receipts.build_receipt(store, 99, account.address, {}) is None
    assert receipt["input_hash"] == "0x" + keccak(b"the input").hex()
    assert receipt["output_hash"] is None  # committed, not revealed: its hash would give the answer away
    for state in (commitments.REVEALING, f"{commitments.REVEAL_SENT} 0xab"):
        Outcomes(store).set(11, verification=state)
        assert receipts.build_receipt(store, 11, account.address, {})["output_hash"] is None  # type: ignore[index]
    Outcomes(store).set(11, verification=f"{commitments.REVEALED} 0xab")
    receipt = receipts.build_receipt(store, 11, account.address, {"classify/x@1": digest})
    assert receipt is not None
    assert receipt["output_hash"] == "0x" + keccak(b"the output").hex()
    plain = store.add(request(12, verifier=ZERO_ADDRESS), "classify/x@1")
    assert plain is not None
    store.update(plain, JobState.RUNNING, attempts=1)
    store.update(plain, JobState.COMPUTED, output=b"plain")
    assert receipts.build_receipt(store, 12, account.address, {})["output_hash"] == "0x" + keccak(b"plain").hex()  # type: ignore[index]
    assert receipt["model_digest"] == "0x" + digest.hex()
    assert receipt["model_id"] == "0x" + keccak(text="classify/x@1").hex()
    assert (receipt["request_id"], receipt["state"], receipt["verification"]) == ("11", "computed", "revealed 0xab")
    answer = receipts.signed(receipt, account)
    text = receipts.canonical(json.loads(json.dumps(answer))["receipt"])  # as a client reads it back
    assert Account.recover_message(encode_defunct(text=text), signature=answer["signature"]) == account.address
    forged = dict(receipt, output_hash="0x" + keccak(b"another output").hex())
    recovered = Account.recover_message(encode_defunct(text=receipts.canonical(forged)), signature=answer["signature"])
    assert recovered != account.address
    store.close()


def test_a_receipt_check_names_each_thing_that_does_not_match_the_chain() -> None:
    account = Account.from_key(b"\x09" * 32)
    digest = b"\xd2" * 32
    receipt = {
        "chain_id": 31337,
        "coordinator": COORDINATOR,
        "request_id": "7",
        "model": "m@1",
        "model_id": "0x" + keccak(text="m@1").hex(),
        "verification": "revealed 0xab",
        "node": account.address,
        "input_hash": "0x" + keccak(b"in").hex(),
        "output_hash": "0x" + keccak(b"out").hex(),
        "model_digest": "0x" + digest.hex(),
    }
    revealed = {"args": {"outputHash": keccak(b"out"), "modelDigest": digest}}
    created = {"args": {"input": b"in", "modelId": keccak(text="m@1")}}
    logs = {"RequestCreated": [created], "Revealed": [revealed], "RequestFulfilled": [], "Dissented": []}
    assert checks(receipts.signed(receipt, account), logs, 31337, COORDINATOR, 7) == []
    forged = receipts.signed(dict(receipt, output_hash="0x" + keccak(b"other").hex()), account)
    assert checks(forged, logs, 31337, COORDINATOR, 7) == [
        "output: output_hash is not the outputHash of the node's event on-chain"
    ]
    unsigned = dict(receipts.signed(receipt, Account.from_key(b"\x0a" * 32)))
    assert checks(unsigned, logs, 31337, COORDINATOR, 7)[0].startswith("signature: signed by")
    garbage = {"receipt": receipt, "signature": "0x1234"}
    assert checks(garbage, logs, 31337, COORDINATOR, 7)[0].startswith("signature: signed by nobody")
    other_digest = dict(logs, Revealed=[{"args": {"outputHash": keccak(b"out"), "modelDigest": b"\x01" * 32}}])
    assert checks(receipts.signed(receipt, account), other_digest, 31337, COORDINATOR, 7) == [
        "model: model_digest is not the digest the node's Revealed event names"
    ]
    nothing = {"RequestCreated": [], "Revealed": [], "RequestFulfilled": [], "Dissented": []}
    assert len(checks(receipts.signed(receipt, account), nothing, 1, COORDINATOR, 7)) == 3  # chain, input, output
    # What a forger may change and sign: another request's receipt, another model, an outcome it did not have.
    signed_as = [
        (dict(receipt, request_id="5"), "request: the receipt is of request 5, not 7"),
        (dict(receipt, model="n@1", model_id="0x" + keccak(text="n@1").hex()), "model: model_id is not the"),
        (dict(receipt, model="n@1"), "model: the model name does not hash"),
        (dict(receipt, verification="agreed"), "outcome: it says agreed, but the node was not paid"),
        (dict(receipt, verification="dissented"), "outcome: it says dissented, but no Dissented event"),
        (dict(receipt, output_hash=None), "output: the receipt names no output yet"),
    ]
    for forged_receipt, problem in signed_as:
        found = checks(receipts.signed(forged_receipt, account), logs, 31337, COORDINATOR, 7)
        assert len(found) == 1, found
        assert found[0].startswith(problem), found
    dissent = dict(logs, Dissented=[{"args": {"outputHash": keccak(b"out")}}])
    assert checks(receipts.signed(receipt, account), dissent, 31337, COORDINATOR, 7) == [
        "outcome: it says revealed 0xab, but a Dissented event names the node"
    ]
