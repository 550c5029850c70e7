"""What a delivery transaction carries and costs: its calldata, its gas bound, its fees and a replacement's fees.

Pure functions of the jobs, the head's base fee and the operator's caps; `node.chain.tx` owns the lifecycle (nonces,
sending, tracking, settling) and calls these.
"""

from __future__ import annotations

import math
from typing import Any

from hexbytes import HexBytes

from node.chain.commitments import split_proof
from node.chain.contracts import CoordinatorAbi
from node.chain.subscriptions import ManagerTarget
from node.jobs.store import Job

#: Gas of the 0-value self-transfer that fills a nonce whose jobs a reorg removed.
CANCEL_GAS = 21_000
#: Gas bounds of a delivery: the transaction, and each item on top of its callback's limit (generous: unused gas is
#: not paid for). Measured (bench.gas): deliver 81,375 with a 100k callback limit of which ~22k used; batch item 46,621.
BATCH_BASE_GAS = 60_000
BATCH_ITEM_GAS = 90_000
#: Calldata bytes are bounded at 40 gas each (16 for calldata, the rest for copying into the callback).
GAS_PER_BYTE = 40
FAILURE_REASON_MAX = 256
#: The coordinator calls a consumer's error callback with at most this much gas (`MAX_ERROR_CALLBACK_GAS`).
ERROR_CALLBACK_GAS = 100_000
#: Gas a verifier may use inside `deliverWithProof` (the coordinator's `MAX_VERIFIER_GAS`), plus the pending record.
VERIFIER_GAS = 1_000_000 + 60_000
#: Gas bound of a consensus request's `commit` (no callback runs in it; measured by the forge gas report ~60k),
#: and of one commit in a `consensusBatch` (its own call frame, the registry's and the vote's reads and writes).
COMMIT_GAS = 150_000
COMMIT_ITEM_GAS = 90_000


def with_proof(job: Job) -> bool:
    """Whether `job` is delivered with `deliverWithProof` (a one-off request that names a verifier, with an output):
    such a job goes alone, never in `deliverBatch` nor as `deliver` (which a verified request refuses,
    `ProofRequired`)."""
    return job.failure is None and job.subscription is None and int(job.request.verifier, 16) != 0


def commits(abi: CoordinatorAbi, job: Job) -> bool:
    """Whether `job`'s action is a consensus request's `commit` (node/chain/consensus.py): an output for a request
    whose verifier is `abi`'s coordinator's consensus module."""
    return with_proof(job) and abi.is_consensus(job.request.verifier)


def failure_reason(failure: str) -> bytes:
    """A failure report's reason as sent: UTF-8, at most `FAILURE_REASON_MAX` bytes, cut on a character boundary
    (whatever a container or an RPC said, the report must fit in a transaction)."""
    return failure.encode()[:FAILURE_REASON_MAX].decode("utf-8", "ignore").encode()


def calldata(abi: CoordinatorAbi, jobs: list[Job], manager: ManagerTarget | None = None) -> bytes:
    """`deliver` / `deliverWithProof` (`with_proof`) / `reportFailure` for one job, `deliverBatch` for several (never
    a job with a proof: `batching.take_batch` sends those alone); `deliverInterval` to the `manager` for a
    subscription interval (always alone: `batching.take_batch`). Raises ValueError for an interval without a manager
    or without an output (an interval has no failure report)."""
    if len(jobs) == 1:
        job = jobs[0]
        if (interval := job.subscription) is not None:
            if manager is None or job.output is None:
                raise ValueError(f"subscription {interval[0]} interval {interval[1]}: nothing to deliver it with")
            return manager.abi.deliver_calldata(interval[0], interval[1], job.output)
        if job.failure is not None:
            return abi.encode_call("reportFailure", job.request_id, failure_reason(job.failure).decode())
        assert job.output is not None
        if with_proof(job):
            if commits(abi, job):  # the first of its two actions (node/chain/consensus.py)
                return abi.encode_call("commit", job.request_id, split_proof(job.proof or b"")[0])
            return abi.encode_call("deliverWithProof", job.request_id, job.output, job.proof or b"")
        return abi.deliver_calldata(job.request_id, job.output)
    if all(commits(abi, j) for j in jobs):  # a consensus request's commit each (batching.take_batch keeps them apart)
        return abi.encode_call(
            "consensusBatch", [(j.request_id, False, split_proof(j.proof or b"")[0], b"") for j in jobs]
        )
    items = [
        (
            j.request_id,
            j.failure is not None,
            failure_reason(j.failure) if j.failure is not None else j.output,
        )
        for j in jobs
    ]
    return abi.encode_call("deliverBatch", items)


def describe(jobs: list[Job], abi: CoordinatorAbi | None = None) -> str:
    """What a transaction of `jobs` is, for logs: `deliverBatch(n …)`, `deliver(id)`, `commit(id)` (with `abi`, for
    a consensus request) or `reportFailure(id)`."""
    if len(jobs) > 1:
        kind = "consensusBatch" if abi is not None and commits(abi, jobs[0]) else "deliverBatch"
        return f"{kind}({len(jobs)} items from request {jobs[0].request_id})"
    if (interval := jobs[0].subscription) is not None:
        return f"deliverInterval(subscription {interval[0]}, interval {interval[1]})"
    kind = "reportFailure" if jobs[0].failure is not None else "deliverWithProof" if with_proof(jobs[0]) else "deliver"
    if abi is not None and commits(abi, jobs[0]):
        kind = "commit"
    return f"{kind}({jobs[0].request_id})"


def item_bytes(job: Job) -> int:
    """Bytes `job` adds to a delivery's calldata (its output and proof, or its failure reason as sent), before ABI
    padding."""
    if job.failure is not None:
        return len(failure_reason(job.failure))
    return len(job.output or b"") + len(job.proof or b"")


def item_gas(job: Job) -> int:
    """Gas bound of one item: its callback's whole limit after the 63/64 rule (an error callback gets at most
    `ERROR_CALLBACK_GAS`), the verifier's (`VERIFIER_GAS`, for a delivery with a proof), the coordinator's own work,
    and its calldata."""
    callback = job.request.callback_gas_limit
    if job.failure is not None:
        callback = min(callback, ERROR_CALLBACK_GAS)
    verifier = VERIFIER_GAS * 64 // 63 if with_proof(job) else 0
    return BATCH_ITEM_GAS + verifier + callback * 64 // 63 + GAS_PER_BYTE * item_bytes(job)


def gas_limit(jobs: list[Job], abi: CoordinatorAbi | None = None) -> int:
    """A bound, not an estimate: every item gets its whole callback limit after the 63/64 rule. An `eth_estimateGas`
    runs the transaction a dozen times over, and for a batch it can settle on a limit at which the coordinator skips
    items instead of reverting. A consensus request's `commit` (with `abi`) gets `COMMIT_GAS`: no callback runs in
    it."""
    if abi is not None and jobs and all(commits(abi, j) for j in jobs):
        return COMMIT_GAS if len(jobs) == 1 else BATCH_BASE_GAS + COMMIT_ITEM_GAS * len(jobs)
    return BATCH_BASE_GAS + sum(item_gas(job) for job in jobs)


def fees(base_fee_wei: int, cap_wei: int, priority_fee_wei: int) -> tuple[int, int] | None:
    """(maxFeePerGas, maxPriorityFeePerGas) for a new transaction, or None while the base fee is above the cap."""
    if base_fee_wei > cap_wei:
        return None
    tip = min(priority_fee_wei, cap_wei - base_fee_wei)
    return min(cap_wei, 2 * base_fee_wei + tip), tip


def bumped(value: int, percent: int) -> int:
    """`value` raised by `percent` per cent, rounded up (a replacement must pay at least that much more)."""
    return math.ceil(value * (100 + percent) / 100)


def replacement_fees(request: dict[str, Any], base_fee_wei: int, cap_wei: int, percent: int) -> tuple[int, int, bool]:
    """(maxFeePerGas, maxPriorityFeePerGas, whether that is a real bump) for re-signing `request` at its nonce: raised
    by `percent`, at least twice the base fee plus the tip, never above the cap. Nodes refuse a replacement that does
    not raise the fee by 10%, so below that the transaction is only rebroadcast."""
    old_max, old_tip = int(request["maxFeePerGas"]), int(request["maxPriorityFeePerGas"])
    new_tip = min(cap_wei, bumped(old_tip, percent))
    new_max = min(cap_wei, max(bumped(old_max, percent), 2 * base_fee_wei + new_tip))
    return new_max, min(new_tip, new_max), new_max >= bumped(old_max, 10)


def receipt_from_json(raw: dict[str, Any]) -> dict[str, Any]:
    """The fields of a raw JSON-RPC receipt the tracker reads, in web3's types."""
    return {
        "status": int(raw["status"], 16),
        "blockNumber": int(raw["blockNumber"], 16),
        "gasUsed": int(raw["gasUsed"], 16),
        "effectiveGasPrice": int(raw["effectiveGasPrice"], 16) if raw.get("effectiveGasPrice") else None,
        "transactionHash": HexBytes(raw["transactionHash"]),
        "logs": [
            {"address": e.get("address", ""), "topics": [HexBytes(t) for t in e["topics"]], "data": HexBytes(e["data"])}
            for e in raw["logs"]
        ],
    }
