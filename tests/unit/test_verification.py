"""Verified requests on the node's side (node/jobs/verification.py, node/chain/delivery.py, node/chain/batching.py,
node/jobs/outcomes.py): which ones it serves, that a delivery with a proof goes alone as `deliverWithProof`, the
proofs kept with the jobs, and which held deliveries are due for `finalizeDelivery`."""

from __future__ import annotations

import dataclasses

import pytest
from eth_abi.abi import decode
from eth_utils.address import to_checksum_address

from node.chain import delivery
from node.chain.batching import BatchLimits, ReadyQueue, take_batch
from node.chain.contracts import ZERO_ADDRESS, CoordinatorAbi, InferenceRequest
from node.config import ModelConfig, parse_config
from node.errors import ConfigError
from node.jobs import verification
from node.jobs.outcomes import Outcomes
from node.jobs.states import JobState
from node.jobs.store import Job, JobStore

ADDR = to_checksum_address("0x" + "55" * 20)
ATTESTING = to_checksum_address("0x" + "a7" * 20)
OPTIMISTIC = to_checksum_address("0x" + "0b" * 20)
VERIFIERS = {ATTESTING: verification.ATTESTATION, OPTIMISTIC: verification.OPTIMISTIC}


def request(rid: int, verifier: str = ZERO_ADDRESS) -> InferenceRequest:
    return InferenceRequest(
        rid, b"\x01" * 32, ADDR, b"in", ADDR, 10**15, 100_000, 1, 2**40, verifier, 10, "0xaa", "0x", 0
    )


def model(**fields: object) -> ModelConfig:
    return ModelConfig(name="m", url="http://127.0.0.1:1", **fields)  # type: ignore[arg-type]


def test_a_plain_request_or_a_listed_verifier_the_model_can_satisfy_is_served() -> None:
    assert verification.judge(model(), ZERO_ADDRESS, {}) is None
    assert verification.judge(model(), OPTIMISTIC, VERIFIERS) is None
    assert verification.judge(model(attests=True), ATTESTING, VERIFIERS) is None


def test_an_unlisted_verifier_or_an_attestation_the_container_cannot_sign_is_skipped() -> None:
    unlisted = verification.judge(model(attests=True), ADDR, VERIFIERS)
    assert unlisted is not None
    assert unlisted.kind == verification.VERIFIER_NOT_SUPPORTED
    assert f"verified by {ADDR}, which this node does not list in [chain] verifiers" in unlisted.reason
    unsigned = verification.judge(model(), ATTESTING, VERIFIERS)
    assert unsigned is not None
    assert unsigned.kind == verification.VERIFIER_NOT_SUPPORTED
    assert "holds no attestation key here (set `attests = true`" in unsigned.reason


def _job(rid: int, verifier: str = ZERO_ADDRESS) -> Job:
    return Job(request(rid, verifier), "m", state=JobState.COMPUTED, output=b"out", proof=b"\x01\x02")


def _take(queue: ReadyQueue) -> list[int]:
    limits = BatchLimits(32, 30_000_000)
    return [j.request_id for j in take_batch(queue, limits, now=0, refusals=lambda r: 0, expire=print, report=print)]


def test_a_delivery_with_a_proof_goes_alone_and_plain_ones_batch_around_it() -> None:
    queue = ReadyQueue()
    for job in [_job(1), _job(2), _job(3, OPTIMISTIC), _job(4), _job(5, ATTESTING), _job(6, ATTESTING)]:
        queue.append(job)
    assert [_take(queue) for _ in range(5)] == [[1, 2], [3], [4], [5], [6]]
    failed = dataclasses.replace(_job(7, ATTESTING), output=None, failure="model blew up")
    assert not delivery.with_proof(failed)  # a failure report of a verified request is a plain report


def test_a_delivery_with_a_proof_is_deliver_with_proof_with_the_verifiers_gas() -> None:
    abi = CoordinatorAbi.from_artifacts()
    job = _job(9, ATTESTING)
    data = delivery.calldata(abi, [job])
    assert data[:4] == abi.selector("deliverWithProof")
    assert decode(["uint256", "bytes", "bytes"], data[4:]) == (9, b"out", b"\x01\x02")
    assert delivery.describe([job]) == "deliverWithProof(9)"
    assert delivery.gas_limit([job]) > delivery.gas_limit([_job(9)]) + delivery.VERIFIER_GAS
    assert delivery.calldata(abi, [_job(9)])[:4] == abi.selector("deliver")


def test_proofs_are_kept_with_their_jobs_and_held_deliveries_are_due_after_their_verdict(store_at: str) -> None:
    store = JobStore(store_at, chain_id=31337, coordinator=ADDR)
    proofs = verification.Proofs(store)
    job = store.add(request(1, ATTESTING), "m")
    assert job is not None
    with store.transaction():
        proofs.set(1, b"\xaa" * 97)
        store.update(job, JobState.COMPUTED, output=b"out", proof=b"\xaa" * 97)
    reopened = JobStore(store_at, chain_id=31337, coordinator=ADDR)
    assert verification.Proofs(reopened).get(1) == b"\xaa" * 97
    assert verification.Proofs(reopened).get(2) == b""
    assert reopened.resumable()[0].request.verifier == ATTESTING  # the verifier is kept with the request

    outcomes = Outcomes(store)
    outcomes.set(1, verification="pending until 1000")
    outcomes.set(2, verification="pending until 5000")
    outcomes.set(3, verification="finalize sent 0xabc")
    outcomes.set(4, verification="valid")
    outcomes.set(5, verification="rejected")
    assert sorted(outcomes.finalize_due(now=2000, limit=10)) == [1, 3]
    assert sorted(outcomes.finalize_due(now=6000, limit=10)) == [1, 2, 3]


def test_challenging_needs_an_optimistic_verifier_to_judge() -> None:
    chain = {"rpc_url": "http://127.0.0.1:1", "coordinator_address": ADDR, "challenge": True}
    models = [{"name": "m", "url": "http://127.0.0.1:2"}]
    with pytest.raises(ConfigError, match='challenge = true needs an "optimistic" verifier'):
        parse_config({"chain": {**chain, "verifiers": {ATTESTING: "attestation"}}, "models": models})
    cfg = parse_config({"chain": {**chain, "verifiers": {OPTIMISTIC.lower(): "optimistic"}}, "models": models})
    assert cfg.chain.verifiers == {OPTIMISTIC: "optimistic"}  # keys checksummed, as requests name them
    with pytest.raises(ConfigError, match=r"chain\.verifiers.*Input should be 'attestation' or 'optimistic'"):
        parse_config({"chain": {**chain, "verifiers": {OPTIMISTIC: "zk"}}, "models": models})
