"""Ends what the node's deliveries left open: requests open past their deadline (`Reclaimer`) and deliveries held
for an optimistic verdict once it is due (`Finalizer`, at the end of this module).

The `Reclaimer` ends the requests this node took on that are still open after their deadline: `reclaim` refunds the
unserved slots to the consumer and runs its error callback, so the request ends in a callback instead of waiting
forever.

Who calls `reclaim` and why (the protocol has no bounty for it; coordinator_contract/README.md): anyone may, after
the deadline. The node does it for the requests it accepted and could not finish alone: a redundant request it
delivered to while other slots stayed empty, a request it reported failed below the failure quorum, one whose
deadline passed before it could deliver. It costs the node one transaction (measured by `bench.gas`); what it buys is
that the consumers of the node's requests always hear back, which is what they pay a node for. Requests the fee
policy skipped are not the node's: it spends no gas on them.

Guarantees:
- Judged by the chain's clock and the coordinator's own view (`getRequests`, one call per round for up to `BATCH`
  requests): a request that is closed already (fulfilled, failed, reclaimed or cancelled) costs nothing.
- Each `reclaim` is simulated from the sending key first (a revert costs no gas) and sent through the transaction
  layer (`TxManager.send_call`: stored before broadcast, nonces, fee cap, replacement). The outcome row says
  `sending` before the send, `sent <tx>` after, and what became of it once mined: `done <tx>`, or `closed` when it
  reverted because another node closed the request first. A transaction that never landed (abandoned: no funds, fees
  over the cap) puts the request back for the next round; so does a `sending`/`sent` mark an earlier run left that
  is older than `RESEND_AFTER_S` (a crash between the mark and the send).
- Several nodes that served one request do not all reclaim it at once: each waits a spread of 0 to `SPREAD_S`
  seconds after the deadline, its own for each request (a hash of its address and the request id), so the first
  one's `reclaim` usually lands before the others simulate theirs. Two that still collide pay for one reverted
  transaction (~24k gas) and record `closed`.
- A round that fails (RPC down) is logged and tried again later; it never stops the node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from eth_utils.crypto import keccak

from node.chain.contracts import CoordinatorAbi
from node.chain.rpc import RpcError, RpcPool, as_reverted, is_revert
from node.jobs.outcomes import (
    FINALIZE_SENT,
    FINALIZING,
    PENDING_UNTIL,
    RECLAIM_CLOSED,
    RECLAIM_DONE,
    RECLAIM_SENDING,
    RECLAIM_SENT,
    VERIFICATION_REJECTED,
    VERIFICATION_VALID,
    Outcomes,
)
from node.jobs.store import JobStore

if TYPE_CHECKING:
    from node.chain.tx import TxManager

log = logging.getLogger(__name__)

#: Gas limit of a `reclaim`: ~45k for the refund and status, plus an error callback of at most 100,000 gas
#: (`MAX_ERROR_CALLBACK_GAS`) after the 63/64 rule, plus margin. Unused gas is not paid for.
RECLAIM_GAS = 220_000
#: Requests checked per round (one `getRequests` call).
BATCH = 64
#: Seconds between rounds.
EVERY_S = 10.0
#: `Status.Open` in the coordinator's `RequestView`.
OPEN = 1
#: Each node waits up to this long after a request's deadline before reclaiming it (its own delay per request).
SPREAD_S = 60
#: A `sending`/`sent` mark older than this with no transaction of this run behind it is tried again (seconds).
RESEND_AFTER_S = 300.0


def spread_s(node: str, request_id: int) -> int:
    """This node's wait after `request_id`'s deadline before it reclaims it: 0 to `SPREAD_S` - 1 seconds, from a
    hash of the node's address and the request id (so nodes differ, and one node's requests differ)."""
    digest = keccak(bytes.fromhex(node.lower().removeprefix("0x")) + request_id.to_bytes(32, "big"))
    return int.from_bytes(digest[:4], "big") % SPREAD_S


def _landed(future: asyncio.Future[Any]) -> tuple[bool | None, str]:
    """(mined successfully?, why) of a `send_call` receipt future that is done: None when the transaction never
    landed (abandoned, or the node stopping), else the receipt's status."""
    if future.cancelled():
        return None, "cancelled"
    exc = future.exception()
    if exc is not None:
        return None, str(exc)
    return int(future.result()["status"]) == 1, ""


class Reclaimer:
    """Sends `reclaim` for the node's requests that are open past their deadline (see the module)."""

    def __init__(self, rpc: RpcPool, abi: CoordinatorAbi, coordinator: str, outcomes: Outcomes, txm: TxManager) -> None:
        self._rpc = rpc
        self._abi = abi
        self._coordinator = coordinator
        self._outcomes = outcomes
        self._txm = txm
        #: `reclaim` transactions sent since start.
        self.sent = 0
        #: Requests whose `reclaim` this run sent and that is not mined yet (never sent twice meanwhile).
        self._flying: set[int] = set()

    async def run(self, every_s: float = EVERY_S) -> None:
        """Checks every `every_s` seconds, until cancelled."""
        while True:
            await asyncio.sleep(every_s)  # a period, not a wait for a condition
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an RPC outage or any answer: tried again next round
                log.warning("could not check expired requests for reclaim: %s", exc)

    async def round(self) -> int:
        """One check of the due requests; returns how many `reclaim`s it sent."""
        head = self._txm.head
        if head is None or not self._txm.addresses:
            return 0
        now, node = int(self._txm.clock.now()), self._txm.addresses[0]
        due = [
            rid
            for rid, deadline in self._outcomes.reclaim_due(now, BATCH, stale_before=time.time() - RESEND_AFTER_S)
            if rid not in self._flying and now > deadline + spread_s(node, rid)
        ]
        if not due:
            return 0
        call = {"to": self._coordinator, "data": "0x" + self._abi.encode_call("getRequests", due).hex()}
        (views,) = self._abi.decode_result(
            "getRequests", bytes.fromhex((await self._rpc.request("eth_call", [call, "latest"]))[2:])
        )
        sent = 0
        for rid, view in zip(due, views, strict=True):
            status = int(view[7])
            if status != OPEN:
                self._outcomes.set(rid, reclaim=RECLAIM_CLOSED)
                continue
            if await self._reclaim(rid, node):
                sent += 1
        return sent

    async def _reclaim(self, rid: int, sender: str) -> bool:
        data = self._abi.encode_call("reclaim", rid)
        call = {"from": sender, "to": self._coordinator, "data": "0x" + data.hex(), "gas": hex(RECLAIM_GAS)}
        try:
            await self._rpc.request("eth_call", [call, "latest"])
        except RpcError as exc:
            if not is_revert(exc):
                raise
            reverted = as_reverted(exc, self._abi, f"reclaim of request {rid}")
            if reverted.error == "DeadlineNotPassed":  # our clock ran ahead of the chain's: next round
                return False
            log.info("request %d: not reclaimed: %s", rid, reverted)
            self._outcomes.set(rid, reclaim=RECLAIM_CLOSED)
            return False
        self._outcomes.set(rid, reclaim=RECLAIM_SENDING)
        try:
            tx, receipt = await self._txm.send_call(data, RECLAIM_GAS, f"reclaim of request {rid}", sender=sender)
        except BaseException:
            self._outcomes.set(rid, reclaim=None)  # not sent: the next round tries again
            raise
        self._outcomes.set(rid, reclaim=f"{RECLAIM_SENT} {tx.hashes[-1]}")
        self._flying.add(rid)
        receipt.add_done_callback(lambda f: self._mined(rid, tx.hashes[-1], f))
        self.sent += 1
        log.info("request %d: open past its deadline; sent reclaim (refund + error callback) tx %s", rid, tx.hashes[-1])
        return True

    def _mined(self, rid: int, tx_hash: str, receipt: asyncio.Future[Any]) -> None:
        """Records what became of request `rid`'s `reclaim`: done, lost to another node's (closed), or never
        landed (the request goes back to the next round)."""
        self._flying.discard(rid)
        ok, why = _landed(receipt)
        if ok is None:
            if why != "cancelled":  # a stopping node keeps its mark: the next run's stale check takes it up
                self._outcomes.set(rid, reclaim=None)
                log.warning("request %d: reclaim tx %s did not land (%s); trying again next round", rid, tx_hash, why)
        elif ok:
            self._outcomes.set(rid, reclaim=f"{RECLAIM_DONE} {tx_hash}")
        else:
            self._outcomes.set(rid, reclaim=RECLAIM_CLOSED)
            log.info("request %d: reclaim tx %s reverted: another node closed the request first", rid, tx_hash)


#: Gas of a `finalizeDelivery` on top of the consumer's callback limit (after the 63/64 rule) and 40 a byte of
#: output: the coordinator's own work (pending record, payment, event), generously. Unused gas is not paid for.
FINALIZE_BASE_GAS = 150_000


class Finalizer:
    """Settles this node's deliveries that an optimistic verifier held (`VerificationPending`) once their verdict is
    due: `finalizeDelivery(requestId, node, output)` pays the node and calls the consumer back.

    Guarantees (as the `Reclaimer`'s): judged by the chain's clock and the coordinator's own answer (the call is
    simulated from the sending key first: `VerificationNotDone` waits for the next round, `NothingPending` means it
    was settled, by anyone, or rejected: the coordinator's logs say which); sent through `TxManager.send_call` at
    most once per request (the outcome's `verification` says `finalizing` before the send and `finalize sent <tx>`
    after); the outcome ends `valid` (with `callback_ok`) or `rejected`. A failed round is tried again later."""

    def __init__(self, rpc: RpcPool, abi: CoordinatorAbi, coordinator: str, store: JobStore, txm: TxManager) -> None:
        self._rpc = rpc
        self._abi = abi
        self._coordinator = coordinator
        self._store = store
        self._outcomes = Outcomes(store)
        self._txm = txm
        #: `finalizeDelivery` transactions sent since start.
        self.sent = 0
        #: Requests whose `finalizeDelivery` this run sent and that is not mined yet.
        self._flying: set[int] = set()

    async def run(self, every_s: float = EVERY_S) -> None:
        """Checks every `every_s` seconds, until cancelled."""
        while True:
            await asyncio.sleep(every_s)  # a period, not a wait for a condition
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an RPC outage or any answer: tried again next round
                log.warning("could not check deliveries awaiting a verdict: %s", exc)

    async def round(self) -> int:
        """One check of the deliveries whose verdict is due; returns how many `finalizeDelivery`s it sent."""
        if self._txm.head is None or not self._txm.addresses:
            return 0
        sent = 0
        for rid in self._outcomes.finalize_due(int(self._txm.clock.now()), BATCH):
            if await self._finalize(rid):
                sent += 1
        return sent

    async def _finalize(self, rid: int) -> bool:
        job = self._store.get(rid)
        if job is None or job.output is None:
            return False  # pruned: nothing to settle it with
        node = self._txm.addresses[0]  # the key verified jobs are delivered from
        data = self._abi.encode_call("finalizeDelivery", rid, node, job.output)
        gas = FINALIZE_BASE_GAS + job.request.callback_gas_limit * 64 // 63 + 40 * len(job.output)
        call = {"from": node, "to": self._coordinator, "data": "0x" + data.hex(), "gas": hex(gas)}
        try:
            await self._rpc.request("eth_call", [call, "latest"])
        except RpcError as exc:
            if not is_revert(exc):
                raise
            reverted = as_reverted(exc, self._abi, f"finalizeDelivery of request {rid}")
            if reverted.error == "VerificationNotDone":  # our clock ran ahead of the chain's: next round
                return False
            if reverted.error == "NothingPending":
                await self._settled(rid, node, job.request.block_number)
                return False
            log.warning("request %d: cannot finalize its delivery: %s", rid, reverted)
            return False
        state = self._outcomes.get(rid).verification or ""
        if rid in self._flying:
            return False  # this run sent it: its transaction is not mined yet
        if not state.startswith(PENDING_UNTIL):
            if self._outcomes.age_s(rid) < RESEND_AFTER_S:
                return False  # an earlier run sent it (or was sending it) lately: give it time to land
            state = PENDING_UNTIL + "0"  # it never landed: the simulation just said it still can be settled
        self._outcomes.set(rid, verification=FINALIZING)
        try:
            tx, receipt = await self._txm.send_call(data, gas, f"finalizeDelivery of request {rid}", sender=node)
        except BaseException:
            self._outcomes.set(rid, verification=state)  # not sent: the next round tries again
            raise
        self._outcomes.set(rid, verification=f"{FINALIZE_SENT} {tx.hashes[-1]}")
        self._flying.add(rid)
        receipt.add_done_callback(lambda f: self._mined(rid, tx.hashes[-1], state, f))
        self.sent += 1
        log.info("request %d: verdict window over; sent finalizeDelivery tx %s", rid, tx.hashes[-1])
        return True

    def _mined(self, rid: int, tx_hash: str, state: str, receipt: asyncio.Future[Any]) -> None:
        """A `finalizeDelivery` that never landed puts the delivery back to `state` (due: the next round sends it
        again); a mined one is read from the coordinator's logs by the next round (its simulation says
        `NothingPending`)."""
        self._flying.discard(rid)
        ok, why = _landed(receipt)
        if ok is None and why != "cancelled":
            self._outcomes.set(rid, verification=state)
            log.warning(
                "request %d: finalizeDelivery tx %s did not land (%s); trying again next round", rid, tx_hash, why
            )

    async def _settled(self, rid: int, node: str, from_block: int) -> None:
        """Records how the chain settled `node`'s held delivery to `rid`: `valid` (a `RequestFulfilled`, with its
        `callbackOk`) or `rejected` (a `DeliveryRejected`), from the coordinator's logs since the request's block."""
        fulfilled, rejected = self._abi.topic("RequestFulfilled"), self._abi.topic("DeliveryRejected")
        word = "0x" + rid.to_bytes(32, "big").hex()
        who = "0x" + bytes.fromhex(node.lower().removeprefix("0x")).rjust(32, b"\0").hex()
        query = {"address": self._coordinator, "fromBlock": hex(from_block), "toBlock": "latest"}
        logs = await self._rpc.request("eth_getLogs", [{**query, "topics": [[fulfilled, rejected], word, who]}])
        for raw in logs:
            if raw["topics"][0].lower() == fulfilled:
                details = self._abi.fulfilled_details([raw], node, self._coordinator).get(rid, {})
                self._outcomes.set(rid, verification=VERIFICATION_VALID, callback_ok=bool(details.get("callbackOk")))
                log.info("request %d: verified delivery settled (valid; callbackOk %s)", rid, details.get("callbackOk"))
                return
        if logs:
            self._outcomes.set(rid, verification=VERIFICATION_REJECTED)
            log.error("request %d: the verifier rejected this node's delivery (not paid)", rid)
        else:
            log.warning("request %d: no delivery of this node is pending, and none was settled or rejected", rid)
