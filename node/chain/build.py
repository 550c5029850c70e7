"""Building and signing the node's transactions.

Guarantees:
- Every transaction is simulated (`eth_call` from its key at its gas limit) before it is signed: a revert comes back
  as a value, decoded from the coordinator's ABI; anything else the RPC answers is raised, so no nonce is spent while
  the RPC does not answer.
- The gas limit is a bound computed from the items (`delivery.gas_limit`: each gets its whole callback limit), not an
  `eth_estimateGas`: an estimate runs the transaction a dozen times over, and for a batch it can settle on a limit at
  which the coordinator skips items instead of reverting. Unused gas is not paid for.
- EIP-1559 fees come from the newest head and never exceed the operator's cap; while the base fee is above the cap
  there are no fees (the caller holds its jobs instead of burning nonces), said once per spell.
- A replacement or a fill is re-signed at the same nonce with fees raised by `bump_percent` (at least twice the base
  fee plus the tip), never above the cap; a fill is a 0-value transfer to self.

The request dictionaries are built by pure functions (`unsigned_call`, `bumped`, `emptied`, `recarried`).
"""

from __future__ import annotations

import logging
from typing import Any

from eth_account.signers.local import LocalAccount

from node.chain import delivery
from node.chain.env import TxEnv
from node.chain.policy import TxPolicy
from node.chain.rpc import RpcError, as_reverted, is_revert
from node.errors import TxReverted
from node.jobs.store import Job, StoredTx

log = logging.getLogger(__name__)

#: `IVerifier.Verdict.Invalid`, as `deliverWithProof` returns it.
VERDICT_INVALID = 2
#: The error name of a `deliverWithProof` whose simulation says the verifier would reject it (`TxBuilder.simulate`).
PROOF_REJECTED = "ProofRejected"


def unsigned_call(to: str, data: bytes, gas: int, nonce: int, chain_id: int, fees: tuple[int, int]) -> dict[str, Any]:
    """An EIP-1559 transaction calling `to` with `data`, no value."""
    return {
        "to": to,
        "data": "0x" + data.hex(),
        "value": 0,
        "gas": gas,
        "nonce": nonce,
        "chainId": chain_id,
        "maxFeePerGas": fees[0],
        "maxPriorityFeePerGas": fees[1],
        "type": 2,
    }


def bumped(request: dict[str, Any], base_fee_wei: int, policy: TxPolicy) -> tuple[dict[str, Any], bool]:
    """`request` with fees raised for a replacement (`delivery.replacement_fees`), and whether that is a real bump
    (False at the cap: only a rebroadcast will do)."""
    new_max, new_tip, raised = delivery.replacement_fees(
        request, base_fee_wei, policy.max_fee_per_gas_wei, policy.bump_percent
    )
    return {**request, "maxFeePerGas": new_max, "maxPriorityFeePerGas": new_tip}, raised


def emptied(request: dict[str, Any], sender: str) -> dict[str, Any]:
    """`request` as a 0-value transfer to self that only fills its nonce."""
    return {**request, "to": sender, "data": "0x", "gas": delivery.CANCEL_GAS}


def recarried(request: dict[str, Any], data: bytes) -> dict[str, Any]:
    """`request` carrying `data` instead (fewer items; its gas bound is kept: it only shrinks with fewer items)."""
    return {**request, "data": "0x" + data.hex()}


def sign(account: LocalAccount, request: dict[str, Any]) -> tuple[str, bytes]:
    """(hash with 0x, raw bytes) of `request` signed by `account`."""
    signed = account.sign_transaction(request)
    return "0x" + signed.hash.hex(), bytes(signed.raw_transaction)


def re_sign(account: LocalAccount, tx: StoredTx, request: dict[str, Any]) -> None:
    """Re-signs `tx` at its nonce as `request`: its new hash is added to `tx.hashes` (the old ones may still be
    mined)."""
    tx_hash, raw = sign(account, request)
    tx.hashes.append(tx_hash)
    tx.raw, tx.request = raw, request


class TxBuilder:
    """Simulates, prices and signs coordinator calls; knows the chain id and the coordinator's `maxOutputBytes`."""

    def __init__(self, env: TxEnv) -> None:
        self._env = env
        self.chain_id = 0
        #: The coordinator's `maxOutputBytes` (read at start; None if it could not be read): a longer output is
        #: reported as a failure instead of being sent to a certain revert.
        self.max_output_bytes: int | None = None
        self._cap_warned = False

    async def read_chain_id(self) -> int:
        self.chain_id = await self._env.rpc.call("eth_chainId", lambda w3: w3.eth.chain_id)
        return self.chain_id

    async def read_limits(self) -> None:
        """Reads the coordinator's `maxOutputBytes` (best effort: without it, oversized outputs are found by the
        simulation's revert or the RPC's refusal)."""
        call = {"to": self._env.coordinator, "data": "0x" + self._env.abi.encode_call("maxOutputBytes").hex()}
        try:
            answer = await self._env.rpc.request("eth_call", [call, "latest"])
            self.max_output_bytes = int(answer, 16)
        except Exception as exc:  # any answer: the limit is an optimisation, not a guarantee
            log.info("could not read the coordinator's maxOutputBytes (%s); outputs are checked at simulation", exc)

    async def simulate(
        self, sender: str, data: bytes, gas: int, what: str, to: str | None = None, *, proof: bool = False
    ) -> TxReverted | None:
        """Runs the call to `to` (default: the coordinator) as `sender` at gas limit `gas`: None if it would succeed,
        the decoded revert if not. `proof`: the call is a `deliverWithProof`, whose answer is the verifier's verdict;
        a verdict of Invalid (the verifier would reject the proof and slash the node) comes back as a `TxReverted`
        with error `PROOF_REJECTED`, so it is never sent. Raises what the RPC answered otherwise (`RpcError`,
        `RpcUnavailable`)."""
        call = {"from": sender, "to": to or self._env.coordinator, "data": "0x" + data.hex(), "gas": hex(gas)}
        try:
            answer = await self._env.rpc.request("eth_call", [call, "latest"])
        except RpcError as exc:
            if not is_revert(exc):
                raise
            return as_reverted(exc, self._env.abi, what)
        rejected = proof and isinstance(answer, str) and len(answer) == 66 and int(answer, 16) == VERDICT_INVALID
        if rejected:
            return TxReverted(
                f"{what}: the verifier would reject this proof and slash the node; not sent (is the container's"
                " attestation key registered with the verifier for this model and digest?)",
                error=PROOF_REJECTED,
            )
        return None

    def fees(self, *, holding: int = 0) -> tuple[int, int] | None:
        """(maxFeePerGas, maxPriorityFeePerGas) for a new transaction now, or None while the base fee is above the
        cap (said once per spell, naming the `holding` jobs that wait for it)."""
        base = self._env.view.base_fee_wei
        fees = delivery.fees(base, self._env.policy.max_fee_per_gas_wei, self._env.policy.priority_fee_wei)
        if fees is not None:
            self._cap_warned = False
        elif holding and not self._cap_warned:
            log.warning(
                "base fee %d wei is above the cap max_fee_per_gas_wei=%d: holding %d job(s) until it falls",
                base,
                self._env.policy.max_fee_per_gas_wei,
                holding,
            )
            self._cap_warned = True
        return fees

    def new_tx(
        self,
        account: LocalAccount,
        nonce: int,
        data: bytes,
        gas: int,
        fees: tuple[int, int],
        jobs: list[Job],
        *,
        to: str | None = None,
    ) -> StoredTx:
        """A call carrying `jobs` (to the coordinator, or to the manager for an interval: `TxEnv.target`), or, with
        `to`, a call of that contract carrying none, signed at `nonce` (not yet stored, tracked or sent)."""
        request = unsigned_call(to or self._env.target(jobs), data, gas, nonce, self.chain_id, fees)
        tx_hash, raw = sign(account, request)
        return StoredTx(
            sender=account.address,
            nonce=nonce,
            hashes=[tx_hash],
            raw=raw,
            request=request,
            items=[(j.request_id, j.failure is not None) for j in jobs],
            sent_block=self._env.view.head_number,
        )
