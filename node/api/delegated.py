"""Delegated requests: a consumer's signer signs a `DelegatedRequest` (EIP-712) off-chain; the node computes the
output and creates and delivers the request on-chain in one `deliverDelegated` transaction, paid from the consumer's
balance on the coordinator. The consumer's backend never needs gas or a transaction of its own.

Guarantees:
- Everything the node can check before accepting is checked, and a refusal says what to fix (422; 409 for a used
  nonce): locally the fields and their ranges, the input against `inputHash`, the model and the signature's form
  (65 bytes, v 27/28, low s); then one `eth_call` of the whole `deliverDelegated` checks what the coordinator will
  (expiry, signer = the consumer's `delegatedSigner()`, nonce, balance, registry, limits), its revert named and
  explained (for a wrong signer: who signed and who should have).
- The struct's fields and types, the `DelegatedRequestCreated` topic and the `delegatedSigner()` selector come from
  the compiled ABIs (`node/api/eip712.py`), the digest from eth-account's EIP-712 encoder.
- An accepted request is computed through its model's `ModelRoute` (node/dispatch/calls.py), like an on-chain
  request: the same concurrency limit and retry policy, no retry starting after its `expiry` or `deadline` (the
  chain's time). It is sent once, through the node's transaction manager (same keys, nonces, fee policy and
  replacement as every delivery); its on-chain request id is read from the receipt.
- The listener sees the `RequestCreated` of that transaction like any other; the store drops it as it commits the
  range (`JobStore.record_requests` knows the hashes of the node's own delegated calls, from signing on and across
  restarts), so it is never computed or delivered twice.
- Each accepted request's view is recorded in the job store at every change of status (node/jobs/apijobs.py), so
  a restart or the next leader answers `GET` for it; one left unsent by a run that stopped is ended as failed with
  what to check (`resume`), one sent is delivered by its stored transaction (the transaction manager resumes it).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from node.api.eip712 import DelegatedTyping, recover
from node.api.jobs import TERMINAL, ApiJob, JobInputError
from node.chain.contracts import CoordinatorAbi, as_bytes, as_int
from node.chain.rpc import RpcError, RpcPool, as_reverted, is_revert
from node.dispatch.pipeline import Route
from node.errors import Overloaded
from node.jobs.apijobs import ApiJobTable
from node.jobs.store import StoredTx

if TYPE_CHECKING:
    from node.observability.metrics import Metrics

log = logging.getLogger(__name__)

#: Gas for deliverDelegated beyond the callback: signature check, request storage, escrow, events (measured ~190k
#: on anvil with an empty callback; doubled for margin, the unused part is not paid).
DELEGATED_GAS = 400_000


class NonceUsedError(JobInputError):
    """The consumer's nonce was used already (a replay): 409."""


class Busy(Overloaded):
    """Too much in progress to take another request now: 503."""


@dataclass(slots=True)
class DelegatedJob(ApiJob):
    """One delegated (EIP-712) request accepted by the API: what was signed, its status (queued, running, sent,
    completed, failed) and the on-chain request id."""

    request: dict[str, Any]
    input: bytes
    signature: bytes
    tx_hash: str | None = None
    request_id: int | None = None
    block_number: int | None = None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "status": self.status,
            "consumer": self.request["consumer"],
            "nonce": str(self.request["nonce"]),
            "created_at": self.created_at,
        }
        for key in ("tx_hash", "request_id", "block_number", "error"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        self._add_timing(out)
        return out


#: (calldata, gas, what, sender) → the signed transaction and a future of its receipt (`TxManager.send_call`).
Send = Callable[..., Awaitable[tuple[StoredTx, asyncio.Future[Any]]]]


class DelegatedRequests:
    """Delegated requests: checked against the chain, computed, then created and delivered on-chain in one
    `deliverDelegated`."""

    def __init__(
        self,
        rpc: RpcPool,
        abi: CoordinatorAbi,
        consumer_abi: list[dict[str, Any]],
        coordinator: str,
        chain_id: int,
        sender: str,
        routes: dict[bytes, Route],
        send: Send,
        *,
        keep: int,
        max_pending: int = 256,
        metrics: Metrics | None = None,
        table: ApiJobTable | None = None,
    ) -> None:
        """`abi`, `consumer_abi`: the coordinator's and `IDelegatingConsumer`'s (the struct, topics and selectors are
        read from them; `ConfigError` when they lack them); `routes`: each served model's, by model id (the ones
        on-chain requests use); `send`: `TxManager.send_call`; `table`: the store's record of each request's view
        (`GET` of one no longer in memory, or accepted by a replica that stopped)."""
        self._rpc = rpc
        self._abi = abi
        self.typing = DelegatedTyping.from_abi(abi, consumer_abi)
        self._coordinator = to_checksum_address(coordinator)
        self._chain_id = chain_id
        self._sender = sender
        self._routes = routes
        self._send = send
        self._keep = keep
        self._max_pending = max_pending
        self._metrics = metrics
        #: (consumer, nonce) of accepted requests not yet finished: a second POST of one is a replay (409).
        self._pending: set[tuple[str, int]] = set()
        self._jobs: OrderedDict[str, DelegatedJob] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self._table = table

    def get(self, owner: str, job_id: str) -> DelegatedJob | StoredView | None:
        """The request's view, from memory or, once forgotten there (or accepted by a replica that stopped), from
        the store."""
        job = self._jobs.get(job_id)
        if job is not None:
            return job if job.owner == owner else None
        record = self._table.load("delegated", owner, job_id) if self._table is not None else None
        return None if record is None else StoredView(record)

    def _save(self, job: DelegatedJob) -> None:
        if self._table is not None:
            self._table.save("delegated", job.id, job.owner, job.model, job.status, job.view())

    def resume(self) -> int:
        """Ends the views the store holds of requests accepted but not yet sent by a run that stopped (this node's or
        another replica's): failed, saying what to check. A request already sent stays `sent`: its transaction is in
        the store and the transaction manager delivers it. Returns how many were ended."""
        if self._table is None:
            return 0
        ended = 0
        for job_id, owner, view in self._table.unfinished("delegated"):
            if job_id in self._jobs or view.get("status") == "sent":
                continue
            view.update(
                status="failed",
                error="the node that accepted it stopped while computing or sending it: if its transaction was"
                " signed, it is delivered anyway; check the consumer's nonce on-chain before signing it again",
                finished_at=time.time(),
            )
            self._table.save("delegated", job_id, owner, str(view.get("model", "")), "failed", view)
            ended += 1
        return ended

    async def submit(self, owner: str, body: Any) -> DelegatedJob:
        """Checks a signed request all the way (see the module's guarantees); starts it only if everything holds."""
        req, input_, signature = self.typing.parse(body)
        replay = (req["consumer"], req["nonce"])
        if replay in self._pending:
            raise NonceUsedError(f"nonce {req['nonce']} of consumer {req['consumer']} is already being served here")
        if len(self._pending) >= self._max_pending:
            raise Busy(f"{self._max_pending} delegated requests in progress; retry shortly")
        route = self._routes.get(req["modelId"])
        if route is None:
            raise JobInputError(f"request.modelId 0x{req['modelId'].hex()} is not served here; see /info for models")
        if keccak(input_) != req["inputHash"]:
            raise JobInputError(f"request.inputHash is not keccak256(input) (0x{keccak(input_).hex()})")
        recover(self._digest(req), signature)  # its form: 65 bytes, v, low s
        # One eth_call checks the rest as the coordinator will (expiry, signer, nonce, balance, registry); a refusal
        # is explained in `_simulate`.
        await self._simulate(req, input_, signature, b"")
        if replay in self._pending:  # a twin POST passed the checks meanwhile
            raise NonceUsedError(f"nonce {req['nonce']} of consumer {req['consumer']} is already being served here")
        self._pending.add(replay)
        job = DelegatedJob(uuid.uuid4().hex, owner, route.model.name, req, input_, signature)
        self._jobs[job.id] = job
        self._save(job)
        self.accepted += 1
        task = asyncio.create_task(self._run(job, route), name=f"delegated-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        while len(self._jobs) > self._keep:
            oldest = next(iter(self._jobs.values()))
            if oldest.status not in TERMINAL:
                break
            del self._jobs[oldest.id]
        return job

    async def _delegated_signer(self, consumer: str) -> str:
        try:
            out = await self._rpc.request(
                "eth_call", [{"to": consumer, "data": "0x" + self.typing.signer_selector.hex()}, "latest"]
            )
        except RpcError:
            out = "0x"
        raw = as_bytes(out)
        if len(raw) < 32:
            raise JobInputError(f"consumer {consumer} has no delegatedSigner() (not an InferenceConsumer contract?)")
        return str(to_checksum_address(raw[12:32]))

    def _digest(self, req: dict[str, Any]) -> bytes:
        return self.typing.digest(req, self._chain_id, self._coordinator)

    def _calldata(self, req: dict[str, Any], input_: bytes, signature: bytes, output: bytes) -> bytes:
        return self._abi.encode_call("deliverDelegated", self.typing.as_tuple(req), input_, signature, output)

    async def _simulate(self, req: dict[str, Any], input_: bytes, signature: bytes, output: bytes) -> None:
        data = self._calldata(req, input_, signature, output)
        gas = DELEGATED_GAS + req["callbackGasLimit"]
        call = {"from": self._sender, "to": self._coordinator, "data": "0x" + data.hex(), "gas": hex(gas)}
        try:
            await self._rpc.request("eth_call", [call, "latest"])
        except RpcError as exc:
            if not is_revert(exc):
                raise
            reverted = as_reverted(exc, self._abi, "deliverDelegated")
            if reverted.error == "NonceUsed":
                raise NonceUsedError(f"nonce {req['nonce']} of consumer {req['consumer']} was used already") from None
            if reverted.error == "DelegationExpired":
                raise JobInputError(f"the delegated request expired at {req['expiry']}; sign it anew") from None
            if reverted.error == "InvalidSignature":  # say who signed and who should have
                signer = recover(self._digest(req), signature)
                expected = await self._delegated_signer(req["consumer"])
                raise JobInputError(
                    f"signed by {signer}, but consumer {req['consumer']}'s delegatedSigner() is {expected}: check"
                    " the EIP-712 domain (name 'Infera Coordinator', version '1', chain id, coordinator address)"
                ) from None
            raise JobInputError(f"the coordinator would refuse it: {reverted}") from None

    async def _run(self, job: DelegatedJob, route: Route) -> None:
        cancelled = False
        try:
            job.status = "running"
            self._save(job)
            # Retried as on-chain jobs are, until the request can no longer be delivered (expiry, deadline).
            deadline = min(job.request["expiry"], job.request["deadline"])
            output = (await route.call(job.id, job.input, deadline=deadline)).output
            # Again with the real output, just before signing: the request may have expired, its nonce been used
            # or the balance spent while the model ran; then nothing is sent (no gas burnt on a revert).
            await self._simulate(job.request, job.input, job.signature, output)
            data = self._calldata(job.request, job.input, job.signature, output)
            gas = DELEGATED_GAS + job.request["callbackGasLimit"]
            tx, mined = await self._send(data, gas, f"delegated {job.id}", sender=self._sender)
            job.status, job.tx_hash = "sent", tx.hashes[-1]
            self._save(job)
            receipt = await mined
            job.tx_hash = "0x" + as_bytes(receipt["transactionHash"]).hex()
            job.block_number = as_int(receipt["blockNumber"])
            if as_int(receipt["status"]) != 1:
                raise RuntimeError(f"deliverDelegated reverted on-chain in tx {job.tx_hash}")
            for entry in receipt["logs"]:
                topics = [as_bytes(t) for t in entry["topics"]]
                if len(topics) > 1 and topics[0] == self.typing.created_topic:
                    job.request_id = int.from_bytes(topics[1], "big")
            job.status = "completed"
            log.info(
                "off-chain job %s: delegated request %s delivered in block %d", job.id, job.request_id, job.block_number
            )
        except asyncio.CancelledError:
            cancelled = True  # the store keeps its last status: the next run (or leader) ends or delivers it
            if job.status == "sent":
                job.error = "the node stopped while the transaction was in flight; it resumes it on its next start"
            else:
                job.error = "the node stopped before the request was sent"
            job.status = "failed"
            raise
        except Exception as exc:
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("off-chain job %s: delegated request failed: %s", job.id, job.error)
        finally:
            job.finished_at = time.time()
            if not cancelled:
                self._save(job)
            job.input = job.signature = b""  # a finished job keeps its view, not its payload
            self._pending.discard((job.request["consumer"], job.request["nonce"]))
            if self._metrics is not None:
                self._metrics.observe_api_job("delegated", job.status)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class StoredView:
    """A delegated request as the store recorded its view (accepted by a run that is gone)."""

    def __init__(self, view: dict[str, Any]) -> None:
        self._view = view
        self.status = str(view.get("status"))

    def view(self) -> dict[str, Any]:
        """What `GET /v1/delegated/{id}` shows: the view as last recorded."""
        return dict(self._view)
