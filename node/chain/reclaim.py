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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from eth_utils.crypto import keccak

from node.chain.contracts import CoordinatorAbi
from node.chain.rpc import RpcPool
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
from node.retry import every

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


class MarkedSends:
    """Sends a request's one-off call (`reclaim`, `finalizeDelivery`) through `TxManager.send_call`, at most one at a
    time per request, marking it in one field of the request's outcome row: `sending` before it leaves, `<sent>
    <tx hash>` once it is committed, back to `undo` when it could not be sent. `landed(rid, tx_hash, ok, why)` hears
    what became of it (`_landed`'s answer) once it is mined or abandoned."""

    def __init__(self, txm: TxManager, outcomes: Outcomes, field: str) -> None:
        self._txm = txm
        self._outcomes = outcomes
        self._field = field
        #: Requests whose call this run sent and that is not mined yet.
        self._flying: set[int] = set()
        #: Calls sent since start.
        self.sent = 0

    def _mark(self, rid: int, value: str | None) -> None:
        fields: dict[str, Any] = {self._field: value}
        self._outcomes.set(rid, **fields)

    def flying(self, rid: int) -> bool:
        """Whether this run sent `rid`'s call and it is not mined yet (never sent twice meanwhile)."""
        return rid in self._flying

    async def send(
        self,
        rid: int,
        data: bytes,
        gas: int,
        what: str,
        sender: str,
        *,
        sending: str,
        sent: str,
        undo: str | None,
        landed: Callable[[int, str, bool | None, str], None],
    ) -> str:
        """Sends the call; returns its transaction hash. Raises what `send_call` raises (the mark is put back)."""
        return await self.send_many(
            [rid], data, gas, what, sender, sending=sending, sent=sent, undo=undo, landed=landed
        )

    async def send_many(
        self,
        rids: list[int],
        data: bytes,
        gas: int,
        what: str,
        sender: str,
        *,
        sending: str,
        sent: str,
        undo: str | None,
        landed: Callable[[int, str, bool | None, str], None],
    ) -> str:
        """`send` of one call that acts for every request of `rids` (a batch): each is marked, flying and told what
        became of the call, as one `send` would."""
        for rid in rids:
            self._mark(rid, sending)
        try:
            tx, receipt = await self._txm.send_call(data, gas, what, sender=sender)
        except BaseException:
            for rid in rids:
                self._mark(rid, undo)  # not sent: the next round tries again
            raise
        tx_hash = tx.hashes[-1]
        for rid in rids:
            self._mark(rid, f"{sent} {tx_hash}")
        self._flying.update(rids)
        self.sent += 1

        def done(future: asyncio.Future[Any]) -> None:
            self._flying.difference_update(rids)
            outcome = _landed(future)
            for rid in rids:
                landed(rid, tx_hash, *outcome)

        receipt.add_done_callback(done)
        return tx_hash


class Reclaimer:
    """Sends `reclaim` for the node's requests that are open past their deadline (see the module)."""

    def __init__(self, rpc: RpcPool, abi: CoordinatorAbi, coordinator: str, outcomes: Outcomes, txm: TxManager) -> None:
        self._rpc = rpc
        self._abi = abi
        self._coordinator = coordinator
        self._outcomes = outcomes
        self._txm = txm
        self._sends = MarkedSends(txm, outcomes, "reclaim")

    @property
    def sent(self) -> int:
        """`reclaim` transactions sent since start."""
        return self._sends.sent

    async def run(self, every_s: float = EVERY_S) -> None:
        """Checks every `every_s` seconds, until cancelled."""
        await every(every_s, self.round, "check expired requests for reclaim", log)

    async def round(self) -> int:
        """One check of the due requests; returns how many `reclaim`s it sent."""
        head = self._txm.head
        if head is None or not self._txm.addresses:
            return 0
        now, node = int(self._txm.clock.now()), self._txm.addresses[0]
        due = [
            rid
            for rid, deadline in self._outcomes.reclaim_due(now, BATCH, stale_before=time.time() - RESEND_AFTER_S)
            if not self._sends.flying(rid) and now > deadline + spread_s(node, rid)
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
        reverted = await self._txm.simulate(sender, data, RECLAIM_GAS, f"reclaim of request {rid}")
        if reverted is not None:
            if reverted.error == "DeadlineNotPassed":  # our clock ran ahead of the chain's: next round
                return False
            log.info("request %d: not reclaimed: %s", rid, reverted)
            self._outcomes.set(rid, reclaim=RECLAIM_CLOSED)
            return False
        tx_hash = await self._sends.send(
            rid,
            data,
            RECLAIM_GAS,
            f"reclaim of request {rid}",
            sender,
            sending=RECLAIM_SENDING,
            sent=RECLAIM_SENT,
            undo=None,
            landed=self._mined,
        )
        log.info("request %d: open past its deadline; sent reclaim (refund + error callback) tx %s", rid, tx_hash)
        return True

    def _mined(self, rid: int, tx_hash: str, ok: bool | None, why: str) -> None:
        """Records what became of request `rid`'s `reclaim`: done, lost to another node's (closed), or never
        landed (the request goes back to the next round)."""
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


class VerificationRounds:
    """What the node's second actions share (the `Finalizer`'s `finalizeDelivery`, node/chain/consensus.py's
    `Revealer`'s `reveal`): rounds every `every_s` seconds over outcome rows, sends marked in their `verification`
    field (`MarkedSends`)."""

    #: Seconds between rounds, and what a round does (for the log line of a failed round).
    every_s = EVERY_S
    what = "check outcomes"

    def __init__(self, rpc: RpcPool, abi: CoordinatorAbi, coordinator: str, store: JobStore, txm: TxManager) -> None:
        self._rpc = rpc
        self._abi = abi
        self._coordinator = coordinator
        self._store = store
        self._outcomes = Outcomes(store)
        self._txm = txm
        self._sends = MarkedSends(txm, self._outcomes, "verification")

    @property
    def sent(self) -> int:
        """Transactions sent since start."""
        return self._sends.sent

    async def run(self, every_s: float | None = None) -> None:
        """Runs a round every `every_s` seconds (default: the class's), until cancelled; a failed round is logged."""
        await every(self.every_s if every_s is None else every_s, self.round, self.what, log)

    async def round(self) -> int:
        """One round; returns the transactions it sent."""
        raise NotImplementedError


class Finalizer(VerificationRounds):
    """Settles this node's deliveries that an optimistic verifier held (`VerificationPending`) once their verdict is
    due: `finalizeDelivery(requestId, node, output)` pays the node and calls the consumer back.

    Guarantees (as the `Reclaimer`'s): judged by the chain's clock and the coordinator's own answer (the call is
    simulated from the sending key first: `VerificationNotDone` waits for the next round, `NothingPending` means it
    was settled, by anyone, or rejected: the coordinator's logs say which); sent through `TxManager.send_call` at
    most once per request (the outcome's `verification` says `finalizing` before the send and `finalize sent <tx>`
    after); the outcome ends `valid` (with `callback_ok`) or `rejected`. A failed round is tried again later."""

    what = "check deliveries awaiting a verdict"

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
        reverted = await self._txm.simulate(node, data, gas, f"finalizeDelivery of request {rid}")
        if reverted is not None:
            if reverted.error == "VerificationNotDone":  # our clock ran ahead of the chain's: next round
                return False
            if reverted.error == "NothingPending":
                await self._settled(rid, node, job.request.block_number)
                return False
            log.warning("request %d: cannot finalize its delivery: %s", rid, reverted)
            return False
        state = self._outcomes.get(rid).verification or ""
        if self._sends.flying(rid):
            return False  # this run sent it: its transaction is not mined yet
        if not state.startswith(PENDING_UNTIL):
            if self._outcomes.age_s(rid) < RESEND_AFTER_S:
                return False  # an earlier run sent it (or was sending it) lately: give it time to land
            state = PENDING_UNTIL + "0"  # it never landed: the simulation just said it still can be settled

        def mined(rid: int, tx_hash: str, ok: bool | None, why: str) -> None:
            # A call that never landed goes back to `state` (due: the next round sends it again); a mined one is read
            # from the coordinator's logs by the next round (its simulation says `NothingPending`).
            if ok is None and why != "cancelled":
                self._outcomes.set(rid, verification=state)
                log.warning("request %d: finalizeDelivery tx %s did not land (%s); next round again", rid, tx_hash, why)

        what = f"finalizeDelivery of request {rid}"
        sent, undo = FINALIZE_SENT, state
        tx_hash = await self._sends.send(
            rid, data, gas, what, node, sending=FINALIZING, sent=sent, undo=undo, landed=mined
        )
        log.info("request %d: verdict window over; sent finalizeDelivery tx %s", rid, tx_hash)
        return True

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
