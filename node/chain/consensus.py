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
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_abi.abi import encode as abi_encode
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from node import faultpoint
from node.chain.contracts import CoordinatorAbi
from node.chain.reclaim import BATCH, VerificationRounds
from node.chain.rpc import RpcPool
from node.jobs.store import JobStore
from node.jobs.verification import Proofs

if TYPE_CHECKING:
    from node.chain.tx import TxManager

log = logging.getLogger(__name__)

#: The `[chain] verifiers` kind the node gives the consensus module of its coordinator (added by the node itself).
CONSENSUS = "consensus"
#: Bytes of a consensus job's stored proof: the commitment, then the salt.
PROOF_BYTES = 64
#: `verification` values of a consensus job's outcome (see the module docstring).
COMMITTED = "committed"
REVEALING = "revealing"
REVEAL_SENT = "reveal sent"
REVEALED = "revealed"
AGREED = "agreed"
DISSENTED = "dissented"
LATE = "late"
NO_QUORUM = "no quorum"
#: Seconds between the revealer's rounds (a reveal waits at most this long after its phase opens).
REVEAL_EVERY_S = 1.0
#: Gas of a `reveal` on top of the consumer's callback limit (after the 63/64 rule) and 40 a byte of output: the
#: commitment check, the walk over earlier reveals (at most 16), payments and refund, events. Unused gas is not paid.
REVEAL_BASE_GAS = 400_000
#: Gas of a `consensusBatch` of reveals on top of its items' (the transaction, the registry check).
REVEAL_BATCH_BASE_GAS = 60_000
#: A `revealing` mark older than this (seconds) with no transaction of this run behind it is a run that stopped
#: mid-send: it goes back to `committed` (the simulation then says whether its reveal landed: `AlreadyRevealed`).
STALE_REVEALING_S = 60.0
#: `Status` values of the coordinator's `RequestView`, and their names.
_OPEN, _FULFILLED = 1, 2
_STATUS = {1: "open", 2: "fulfilled", 3: "failed", 4: "reclaimed after its deadline", 5: "cancelled"}


def module_address(coordinator: str) -> ChecksumAddress:
    """The address of `coordinator`'s `ConsensusModule`: the Coordinator's constructor creates it as its first and
    only contract, so it is CREATE(coordinator, nonce 1) = keccak256(rlp([coordinator, 1]))[12:] (EIP-161 starts a
    contract's nonce at 1). The same as the coordinator's `consensusModule()` (checked by tests/e2e)."""
    sender = bytes.fromhex(coordinator.lower().removeprefix("0x"))
    return to_checksum_address(keccak(b"\xd6\x94" + sender + b"\x01")[12:])


def commitment(chain_id: int, coordinator: str, request_id: int, node: str, output: bytes, salt: bytes) -> bytes:
    """The 32-byte commitment `node` sends for `output` (the coordinator's `commitmentFor`): keccak256 of
    `abi.encode(uint256 chainId, address coordinator, uint256 requestId, address node, bytes32 keccak256(output),
    bytes32 salt)`. Raises ValueError for a salt that is not 32 bytes."""
    if len(salt) != 32:
        raise ValueError(f"a salt is 32 bytes, not {len(salt)}")
    return keccak(
        abi_encode(
            ["uint256", "address", "uint256", "address", "bytes32", "bytes32"],
            [chain_id, coordinator, request_id, node, keccak(output), salt],
        )
    )


def new_proof(chain_id: int, coordinator: str, request_id: int, node: str, output: bytes) -> bytes:
    """What a consensus job stores as its proof once its output is computed: the commitment (32 bytes) for a fresh
    random salt, then the salt (32 bytes)."""
    salt = secrets.token_bytes(32)
    return commitment(chain_id, coordinator, request_id, node, output, salt) + salt


def split_proof(proof: bytes) -> tuple[bytes, bytes]:
    """(commitment, salt) of a consensus job's stored proof; raises ValueError for one of another length."""
    if len(proof) != PROOF_BYTES:
        raise ValueError(f"a consensus proof is {PROOF_BYTES} bytes (commitment, salt), not {len(proof)}")
    return proof[:32], proof[32:]


@dataclass(frozen=True)
class _Reveal:
    """A reveal that simulated fine: its request, output, salt, calldata (`reveal`) and gas bound."""

    rid: int
    output: bytes
    salt: bytes
    data: bytes
    gas: int


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

    async def round(self) -> int:
        """One pass over the committed (or revealed, not yet settled) consensus jobs; returns the reveals sent."""
        if self._txm.head is None or not self._txm.addresses:
            return 0
        ready: list[_Reveal] = []
        for rid, state in self._outcomes.consensus_due(BATCH, (COMMITTED, REVEALING, REVEAL_SENT, REVEALED)):
            if self._sends.flying(rid):
                continue
            if state == COMMITTED:
                if (reveal := await self._ready(rid)) is not None:
                    ready.append(reveal)
            elif state.startswith((REVEAL_SENT, REVEALED)):
                await self._settled(rid)
            elif self._outcomes.age_s(rid) > STALE_REVEALING_S:  # `revealing` left by a run that stopped mid-send
                self._outcomes.set(rid, verification=COMMITTED)
        if not ready:
            return 0
        faultpoint.reached("reveal-sending")  # between the two actions: a restart must reveal, once
        node = self._txm.addresses[0]
        if len(ready) == 1:
            data, gas, what = ready[0].data, ready[0].gas, f"reveal of request {ready[0].rid}"
        else:  # one transaction for the round's reveals: `consensusBatch` (a bad item is skipped on its own)
            items = [(r.rid, True, r.salt, r.output) for r in ready]
            data = self._abi.encode_call("consensusBatch", items)
            gas = REVEAL_BATCH_BASE_GAS + sum(r.gas for r in ready)
            what = f"consensusBatch of {len(ready)} reveals from request {ready[0].rid}"
        tx_hash = await self._sends.send_many(
            [r.rid for r in ready],
            data,
            gas,
            what,
            node,
            sending=REVEALING,
            sent=REVEAL_SENT,
            undo=COMMITTED,
            landed=self._mined,
        )
        log.info("commit phase over for request(s) %s; sent %s tx %s", [r.rid for r in ready], what, tx_hash)
        return len(ready)

    def _mined(self, rid: int, tx_hash: str, ok: bool | None, why: str) -> None:
        """Records what became of the reveal of `rid` carried by `tx_hash`: mined (`revealed`: the next rounds read
        how the request ends; an item a batch skipped reads as `late` there), reverted or never landed (back to
        `committed`: the next simulation says whether it can still be revealed)."""
        if ok is None and why == "cancelled":
            return  # a stopping node keeps its mark: the next run's stale check takes it up
        if ok:
            self._outcomes.set(rid, verification=f"{REVEALED} {tx_hash}")
            return
        self._outcomes.set(rid, verification=COMMITTED)
        if ok is None:
            log.warning("request %d: reveal tx %s did not land (%s); next round again", rid, tx_hash, why)

    async def _ready(self, rid: int) -> _Reveal | None:
        """`rid`'s reveal if it can be sent now (simulated fine), else None (recording why, where that ends it)."""
        job = self._store.get(rid)
        proof = job.proof if job is not None else None
        if job is not None and job.output is not None and (proof is None or len(proof) != PROOF_BYTES):
            proof = Proofs(self._store).get(rid)  # the salt is in the store after a restart
        if job is None or job.output is None or proof is None or len(proof) != PROOF_BYTES:
            log.error("request %d: committed, but its output or salt is gone from the store; cannot reveal", rid)
            self._outcomes.set(rid, verification=f"{NO_QUORUM} (output lost: not revealed)")
            return None
        node = self._txm.addresses[0]  # the key consensus jobs are committed from
        _, salt = split_proof(proof)
        data = self._abi.encode_call("reveal", rid, job.output, salt)
        gas = REVEAL_BASE_GAS + job.request.callback_gas_limit * 64 // 63 + 40 * len(job.output)
        reverted = await self._txm.simulate(node, data, gas, f"reveal of request {rid}")
        if reverted is None:
            return _Reveal(rid, job.output, salt, data, gas)
        if reverted.error == "RevealNotOpen":  # other nodes may still commit: to the back of the queue
            self._outcomes.set(rid, verification=COMMITTED)
            return None
        if reverted.error == "DeadlinePassed":  # the request is the reclaimer's now (refund, error callback)
            self._outcomes.set(rid, verification=f"{NO_QUORUM} (its deadline passed before this node revealed)")
            self._count("no_quorum")
            log.warning("request %d: its deadline passed before this node could reveal; it is reclaimed", rid)
        elif reverted.error == "RequestClosed":
            await self._settled(rid)
        elif reverted.error == "AlreadyRevealed":  # an earlier run's reveal landed: see how the request ends
            self._outcomes.set(rid, verification=f"{REVEALED} (earlier run)")
        else:
            log.warning("request %d: cannot reveal: %s", rid, reverted)
            self._outcomes.set(rid, verification=f"{NO_QUORUM} (reveal refused: {reverted.error or reverted})")
        return None

    async def _settled(self, rid: int) -> None:
        """Records how request `rid` ended for this node once it is closed: `agreed` (paid, from its
        `RequestFulfilled`), `dissented`, `late` (closed before this node revealed) or `no quorum`."""
        view = await self._view(rid)
        status = int(view[7])
        if status == _OPEN:  # still collecting reveals: to the back of the queue (no row starves the others)
            state = self._outcomes.get(rid).verification
            self._outcomes.set(rid, verification=state)
            return
        job = self._store.get(rid)
        node = self._txm.addresses[0]
        from_block = job.request.block_number if job is not None else 0
        word = "0x" + rid.to_bytes(32, "big").hex()
        who = "0x" + bytes.fromhex(node.lower().removeprefix("0x")).rjust(32, b"\0").hex()
        fulfilled, dissented = self._abi.topic("RequestFulfilled"), self._abi.topic("Dissented")
        query = {"address": self._coordinator, "fromBlock": hex(from_block), "toBlock": "latest"}
        logs = await self._rpc.request("eth_getLogs", [{**query, "topics": [[fulfilled, dissented], word, who]}])
        for raw in logs:
            if str(raw["topics"][0]).lower() == fulfilled:
                details = self._abi.fulfilled_details([raw], node, self._coordinator).get(rid, {})
                fee = details.get("fee")
                self._outcomes.set(
                    rid,
                    verification=AGREED,
                    callback_ok=bool(details.get("callbackOk")),
                    fee_earned=None if fee is None else int(fee),
                )
                self._count("agreed")
                log.info("request %d: consensus reached with this node's output (paid %s)", rid, fee)
                return
        if logs:
            self._outcomes.set(rid, verification=DISSENTED)
            self._count("dissented")
            log.error("request %d: the quorum agreed on another output than this node's (not paid)", rid)
        elif status == _FULFILLED:
            self._outcomes.set(rid, verification=LATE)
            self._count("late")
            log.info("request %d: the quorum was reached without this node's reveal (not paid)", rid)
        else:
            self._outcomes.set(rid, verification=NO_QUORUM)
            self._count("no_quorum")
            log.info("request %d: closed without a quorum (%s)", rid, _STATUS.get(status, f"status {status}"))

    async def _view(self, rid: int) -> Any:
        call = {"to": self._coordinator, "data": "0x" + self._abi.encode_call("getRequests", [rid]).hex()}
        raw = await self._rpc.request("eth_call", [call, "latest"])
        (views,) = self._abi.decode_result("getRequests", bytes.fromhex(raw[2:]))
        return views[0]
