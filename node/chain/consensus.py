"""Consensus requests (k of n nodes must agree on the output bytes): this node's commitment, then its reveal.

A consensus request (coordinator_contract/README.md, "Consensus requests") is a request whose `verifier` is the
Coordinator's `ConsensusModule`. Each node that serves it acts twice:
1. **commit**: `commit(requestId, commitment)` with `commitment = keccak256(abi.encode(chainId, coordinator, requestId,
   node, keccak256(output), salt))`, sent by the transaction layer like any delivery (node/chain/delivery.py); the
   `salt` is 32 random bytes kept in the store (the `proofs` table, as the job's proof) in the commit that records the
   output, so a restart reveals what it committed and never computes or commits a second time;
2. **reveal**: `reveal(requestId, output, salt)` once the commit phase is over (every slot committed, or the commit
   window passed), sent by the `Revealer` below.
The coordinator pays the nodes whose revealed output reaches the quorum first, calls the consumer back once, and names
each dissent (`Dissented`); reveals after the quorum are refused (`RequestClosed`).

Why this is copy-proof (the threat model is in coordinator_contract/README.md): the commitment binds the node's
address and a secret salt, so it cannot be replayed by another node nor guessed from a low-entropy output, and no
node can commit once reveals (the only place an output appears) have begun.

The outcome row's `verification` field follows the job after its commit is mined (the job itself is `confirmed`
then, as a delivery held for an optimistic verdict is): `committed` -> `revealing` -> `reveal sent <tx>` ->
`revealed <tx>` -> `agreed` (paid: `fee_earned`, `callback_ok`), `dissented` (revealed another output: unpaid),
`late` (the quorum was reached before this node revealed: unpaid), or `no quorum` (the request closed without one).

Guarantees (as the `Finalizer`'s, node/chain/reclaim.py): judged by the coordinator's own answer (each reveal is
simulated from the committing key first; `RevealNotOpen` waits for the next round); sent through
`TxManager.send_call` at most once per request at a time (`revealing` before the send, `reveal sent <tx>` after); a
reveal that never landed goes back to `committed` and is simulated again; a failed round is tried again later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from node import faultpoint
from node.chain.commitments import (
    AGREED,
    COMMITTED,
    DISSENTED,
    LATE,
    NO_QUORUM,
    PROOF_BYTES,
    REVEAL_SENT,
    REVEALED,
    REVEALING,
    split_proof,
)
from node.chain.contracts import CoordinatorAbi
from node.chain.reclaim import BATCH, VerificationRounds
from node.chain.rpc import RpcPool
from node.jobs.store import JobStore
from node.jobs.verification import Proofs

if TYPE_CHECKING:
    from node.chain.tx import TxManager

log = logging.getLogger(__name__)

#: Seconds between the revealer's rounds (a reveal waits at most this long after its phase opens).
REVEAL_EVERY_S = 1.0
#: Gas of a `reveal` on top of the consumer's callback limit (after the 63/64 rule) and 40 a byte of output: the
#: commitment check, the walk over earlier reveals (at most 16), payments and refund, events. Unused gas is not paid.
REVEAL_BASE_GAS = 400_000
#: Gas of a `consensusBatch` of reveals on top of its items' (the transaction, the registry check).
REVEAL_BATCH_BASE_GAS = 60_000
#: Limits of one transaction of reveals: items, gas (below EIP-7825's 2^24 per-transaction cap, and half a 30M
#: block), and output bytes (as `batching.MAX_BATCH_DATA_BYTES`: geth refuses transactions over 128 KiB).
MAX_REVEALS_PER_TX = 16
MAX_REVEAL_GAS = 15_000_000
MAX_REVEAL_BYTES = 96 * 1024
#: Longest a row that waits (its commit window, other nodes' reveals) is left alone between checks, in seconds.
MAX_WAIT_S = 8.0
#: Simulation errors after which this node's reveal can never succeed: the job ends (`no quorum (...)`). Any other
#: (`RevealNotOpen`, `NodeNotActive` until the stake is back, an RPC without revert data) is tried again later.
FINAL_REVEAL_ERRORS = frozenset(
    {"DeadlinePassed", "NotCommitted", "CommitmentMismatch", "ModelDigestMismatch", "OutputTooLarge"}
)
#: A `revealing` mark older than this (seconds) with no transaction of this run behind it is a run that stopped
#: mid-send: it goes back to `committed` (the simulation then says whether its reveal landed: `AlreadyRevealed`).
STALE_REVEALING_S = 60.0
#: `Status` values of the coordinator's `RequestView`, and their names.
_OPEN, _FULFILLED = 1, 2
_STATUS = {1: "open", 2: "fulfilled", 3: "failed", 4: "reclaimed after its deadline", 5: "cancelled"}


@dataclass(frozen=True)
class _Reveal:
    """A reveal that simulated fine: its request, output, salt, calldata (`reveal`) and gas bound."""

    rid: int
    output: bytes
    salt: bytes
    data: bytes
    gas: int


def _take(ready: list[_Reveal]) -> tuple[list[_Reveal], list[_Reveal]]:
    """The first reveals of `ready` that fit one transaction (at most `MAX_REVEALS_PER_TX`, `MAX_REVEAL_GAS` gas and
    `MAX_REVEAL_BYTES` of outputs; the first always), and the rest."""
    gas, size, n = REVEAL_BATCH_BASE_GAS, 0, 0
    for reveal in ready:
        full = n >= MAX_REVEALS_PER_TX or size + len(reveal.output) > MAX_REVEAL_BYTES
        if n and (full or gas + reveal.gas > MAX_REVEAL_GAS):
            break
        gas, size, n = gas + reveal.gas, size + len(reveal.output), n + 1
    return ready[:n], ready[n:]


class Revealer(VerificationRounds):
    """Reveals this node's committed outputs once their commit phase is over, and records how each request ended
    for it (see the module)."""

    every_s = REVEAL_EVERY_S
    what = "reveal committed consensus outputs"

    def __init__(
        self,
        rpc: RpcPool,
        abi: CoordinatorAbi,
        coordinator: str,
        store: JobStore,
        txm: TxManager,
        *,
        count: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        """`count(outcome)`: told how each request ended for this node (`agreed`, `dissented`, `late`,
        `no_quorum`; the metrics' `count_consensus`)."""
        super().__init__(rpc, abi, coordinator, store, txm)
        self._count = count
        #: Rows left alone until a monotonic time, and how often each has waited (`_wait`).
        self._not_before: dict[int, float] = {}
        self._tries: dict[int, int] = {}

    async def round(self) -> int:
        """One pass over the committed (or revealed, not yet settled) consensus jobs; returns the reveals sent. A
        row whose check fails (an RPC error) is logged and goes to the back of the queue: it never holds up the
        others."""
        if self._txm.head is None or not self._txm.addresses:
            return 0
        ready: list[_Reveal] = []
        now = time.monotonic()
        for rid, state in self._outcomes.consensus_due(BATCH, (COMMITTED, REVEALING, REVEAL_SENT, REVEALED)):
            if self._sends.flying(rid) or self._not_before.get(rid, 0.0) > now:
                continue
            try:
                if state == COMMITTED:
                    if (reveal := await self._ready(rid)) is not None:
                        ready.append(reveal)
                elif state.startswith((REVEAL_SENT, REVEALED)):
                    await self._settled(rid, state)
                elif self._outcomes.age_s(rid) > STALE_REVEALING_S:  # left by a run that stopped mid-send
                    self._outcomes.set(rid, verification=COMMITTED)
            except Exception as exc:  # whatever the RPC answered: this row later, the others now
                log.warning("request %d: consensus check failed (%s: %s); trying again", rid, type(exc).__name__, exc)
                self._wait(rid)
                self._outcomes.set(rid, verification=state)
        sent = 0
        while ready:  # as many transactions as the limits of one take
            batch, ready = _take(ready)
            await self._send(batch)
            sent += len(batch)
        return sent

    async def _send(self, batch: list[_Reveal]) -> None:
        faultpoint.reached("reveal-sending")  # between the two actions: a restart must reveal, once
        node = self._txm.addresses[0]
        if len(batch) == 1:
            data, gas, what = batch[0].data, batch[0].gas, f"reveal of request {batch[0].rid}"
        else:  # one transaction for several reveals: `consensusBatch` (a bad item is skipped on its own)
            items = [(r.rid, True, r.salt, r.output) for r in batch]
            data = self._abi.encode_call("consensusBatch", items)
            gas = REVEAL_BATCH_BASE_GAS + sum(r.gas for r in batch)
            what = f"consensusBatch of {len(batch)} reveals from request {batch[0].rid}"
        tx_hash = await self._sends.send_many(
            [r.rid for r in batch],
            data,
            gas,
            what,
            node,
            sending=REVEALING,
            sent=REVEAL_SENT,
            undo=COMMITTED,
            landed=self._mined,
        )
        log.info("commit phase over for request(s) %s; sent %s tx %s", [r.rid for r in batch], what, tx_hash)

    def _wait(self, rid: int) -> None:
        """Leaves `rid` alone for a while: doubling from `REVEAL_EVERY_S` up to `MAX_WAIT_S` while it keeps waiting
        (a commit window of minutes is not asked about every second)."""
        tries = self._tries[rid] = self._tries.get(rid, 0) + 1
        self._not_before[rid] = time.monotonic() + min(MAX_WAIT_S, REVEAL_EVERY_S * 2 ** min(tries, 8))

    def _done(self, rid: int, verification: str, outcome: str | None = None, **fields: Any) -> None:
        """Records `rid`'s outcome for this node (`outcome`: the metric's, when it ended) and forgets its waiting."""
        self._outcomes.set(rid, verification=verification, **fields)
        self._tries.pop(rid, None)
        self._not_before.pop(rid, None)
        if outcome is not None:
            self._count(outcome)

    def _mined(self, rid: int, tx_hash: str, ok: bool | None, why: str) -> None:
        """Records what became of the reveal of `rid` carried by `tx_hash`: mined (`revealed`: the next rounds read
        how the request ends, and whether the reveal is on-chain: an item a batch skipped goes back to `committed`),
        reverted or never landed (back to `committed`: the next simulation says whether it can still be revealed)."""
        if ok is None and why == "cancelled":
            return  # a stopping node keeps its mark: the next run's stale check takes it up
        if ok:
            self._outcomes.set(rid, verification=f"{REVEALED} {tx_hash}")
            return
        self._outcomes.set(rid, verification=COMMITTED)
        if ok is None:
            log.warning("request %d: reveal tx %s did not land (%s); next round again", rid, tx_hash, why)

    async def _ready(self, rid: int) -> _Reveal | None:
        """`rid`'s reveal if it can be sent now (simulated fine, and a quorum still possible), else None (recording
        why, where that ends it)."""
        job = self._store.get(rid)
        proof = job.proof if job is not None else None
        if job is not None and job.output is not None and (proof is None or len(proof) != PROOF_BYTES):
            proof = Proofs(self._store).get(rid)  # the salt is in the store after a restart
        if job is None or job.output is None or proof is None or len(proof) != PROOF_BYTES:
            log.error("request %d: committed, but its output or salt is gone from the store; cannot reveal", rid)
            self._done(rid, f"{NO_QUORUM} (output lost: not revealed)", "no_quorum")
            return None
        node = self._txm.addresses[0]  # the key consensus jobs are committed from
        _, salt = split_proof(proof)
        data = self._abi.encode_call("reveal", rid, job.output, salt)
        gas = REVEAL_BASE_GAS + job.request.callback_gas_limit * 64 // 63 + 40 * len(job.output)
        reverted = await self._txm.simulate(node, data, gas, f"reveal of request {rid}")
        if reverted is None:
            quorum, commits = (await self._consensus(rid))[:2]
            if commits < quorum:  # the commit window closed with too few commits: a reveal could not pay
                why = f"{NO_QUORUM} (only {commits} of the {quorum} needed committed: not revealed)"
                self._done(rid, why, "no_quorum")
                log.info("request %d: %d of %d needed committed; not revealed (it is reclaimed)", rid, commits, quorum)
                return None
            return _Reveal(rid, job.output, salt, data, gas)
        if reverted.error in FINAL_REVEAL_ERRORS:
            if reverted.error == "DeadlinePassed":  # the request is the reclaimer's now (refund, error callback)
                why = "its deadline passed before this node revealed"
            else:
                why = f"reveal refused: {reverted.error_text}"
                log.error("request %d: cannot reveal: %s", rid, reverted)
            self._done(rid, f"{NO_QUORUM} ({why})", "no_quorum")
        elif reverted.error == "RequestClosed":
            await self._settled(rid, COMMITTED)
        elif reverted.error == "AlreadyRevealed":  # an earlier run's reveal landed: see how the request ends
            self._outcomes.set(rid, verification=f"{REVEALED} (earlier run)")
        else:  # other nodes may still commit (`RevealNotOpen`), the key is paused, an RPC said something: later
            if reverted.error != "RevealNotOpen":
                log.warning("request %d: not revealed yet: %s", rid, reverted)
            self._wait(rid)
            self._outcomes.set(rid, verification=COMMITTED)  # to the back of the queue
        return None

    async def _settled(self, rid: int, state: str) -> None:
        """Records how request `rid` ended for this node once it is closed, from the coordinator's views: `agreed`
        (its revealed output is the agreed one: paid), `dissented` (it revealed another), `late` (closed before
        it revealed) or `no quorum`. While the request is open, a reveal that is not on-chain after
        `STALE_REVEALING_S` (a batch skipped it, an earlier run's transaction was given up) goes back to
        `committed`."""
        node = self._txm.addresses[0]
        view = await self._view(rid)
        status = int(view[7])
        stale = status == _OPEN and self._outcomes.age_s(rid) > STALE_REVEALING_S
        revealed = agreed = False
        if status != _OPEN or stale:  # the vote is read only when it decides something (one call a check)
            _, _, revealed, agreed = await self._vote(rid, node)
        if status == _OPEN:
            if stale and not revealed:
                log.warning("request %d: its reveal is not on-chain; revealing again", rid)
                self._outcomes.set(rid, verification=COMMITTED)
            else:  # still collecting reveals: later, to the back of the queue (no row starves the others)
                self._wait(rid)
                self._outcomes.set(rid, verification=state)
            return
        if status == _FULFILLED and revealed and agreed:
            fee, bps = int(view[9]), int(view[6])
            earned = fee - fee * bps // 10_000
            self._done(rid, AGREED, "agreed", fee_earned=earned)
            log.info("request %d: consensus reached with this node's output (paid %d)", rid, earned)
        elif status == _FULFILLED and revealed:
            self._done(rid, DISSENTED, "dissented")
            log.error("request %d: the quorum agreed on another output than this node's (not paid)", rid)
        elif status == _FULFILLED:
            self._done(rid, LATE, "late")
            log.info("request %d: the quorum was reached without this node's reveal (not paid)", rid)
        else:
            self._done(rid, NO_QUORUM, "no_quorum")
            log.info("request %d: closed without a quorum (%s)", rid, _STATUS.get(status, f"status {status}"))

    async def _consensus(self, rid: int) -> tuple[Any, ...]:
        """The coordinator's `consensusOf(rid)`: (quorum, commits, reveals, commitDeadline, revealOpen, modelDigest,
        agreedHash)."""
        return await self._call("consensusOf", rid)

    async def _vote(self, rid: int, node: str) -> tuple[bytes, bytes, bool, bool]:
        """(commitment, outputHash, revealed, whether the revealed hash is the agreed one) of `node` on `rid`."""
        commitment_, output_hash, revealed = await self._call("voteOf", rid, node)
        agreed_hash = (await self._consensus(rid))[6]
        agreed = revealed and bytes(agreed_hash) != bytes(32) and bytes(output_hash) == bytes(agreed_hash)
        return bytes(commitment_), bytes(output_hash), bool(revealed), agreed

    async def _call(self, function: str, *args: Any) -> tuple[Any, ...]:
        call = {"to": self._coordinator, "data": "0x" + self._abi.encode_call(function, *args).hex()}
        raw = await self._rpc.request("eth_call", [call, "latest"])
        return self._abi.decode_result(function, bytes.fromhex(raw[2:]))

    async def _view(self, rid: int) -> Any:
        call = {"to": self._coordinator, "data": "0x" + self._abi.encode_call("getRequests", [rid]).hex()}
        raw = await self._rpc.request("eth_call", [call, "latest"])
        (views,) = self._abi.decode_result("getRequests", bytes.fromhex(raw[2:]))
        return views[0]
