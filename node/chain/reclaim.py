"""Ends the requests this node took on that are still open after their deadline: `reclaim` refunds the unserved
slots to the consumer and runs its error callback, so the request ends in a callback instead of waiting forever.

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
  layer (`TxManager.send_call`: stored before broadcast, nonces, fee cap, replacement), at most once per request:
  the outcome row says `sending` before the send and `sent <tx>` after, so a crash cannot send it twice.
- A round that fails (RPC down) is logged and tried again later; it never stops the node.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from node.chain.contracts import CoordinatorAbi
from node.chain.rpc import RpcError, RpcPool, as_reverted, is_revert
from node.jobs.outcomes import RECLAIM_CLOSED, RECLAIM_SENT, Outcomes

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

    async def run(self, every_s: float = EVERY_S) -> None:
        """Checks every `every_s` seconds, until cancelled."""
        while True:
            await asyncio.sleep(every_s)
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
        due = self._outcomes.reclaim_due(int(self._txm.clock.now()), BATCH)
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
            if await self._reclaim(rid):
                sent += 1
        return sent

    async def _reclaim(self, rid: int) -> bool:
        data = self._abi.encode_call("reclaim", rid)
        sender = self._txm.addresses[0]
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
        self._outcomes.set(rid, reclaim="sending")
        try:
            tx, _ = await self._txm.send_call(data, RECLAIM_GAS, f"reclaim of request {rid}", sender=sender)
        except BaseException:
            self._outcomes.set(rid, reclaim=None)  # not sent: the next round tries again
            raise
        self._outcomes.set(rid, reclaim=f"{RECLAIM_SENT} {tx.hashes[-1]}")
        self.sent += 1
        log.info("request %d: open past its deadline; sent reclaim (refund + error callback) tx %s", rid, tx.hashes[-1])
        return True
