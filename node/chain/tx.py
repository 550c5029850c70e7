"""Sends the node's transactions: simulate, sign, send with a local nonce, wait for the receipt.

Guarantees: nonces come from one local counter per key (synced from the chain at start), so concurrent
deliveries never collide; every delivery is simulated first, and a request already fulfilled is skipped, not
sent; `maxFeePerGas` never exceeds the operator's cap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import aiohttp
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, ProviderConnectionError, TimeExhausted

from node.chain.contracts import CoordinatorAbi
from node.chain.rpc import as_reverted
from node.errors import RpcUnavailable, TxReverted

log = logging.getLogger(__name__)

GAS_MARGIN = 1.2
#: What a dead or flaky RPC raises through web3's HTTP provider.
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, ProviderConnectionError)


@dataclass(frozen=True)
class Receipt:
    """What the node keeps of a mined delivery."""

    tx_hash: str
    block_number: int
    gas_used: int
    nonce: int


class AlreadyFulfilled(TxReverted):
    """The simulation says the request needs nothing more from this node: it already served it (before a
    restart), the request is closed (fulfilled, failed, reclaimed), or its deadline passed."""


#: Coordinator errors that mean "nothing to do here", as opposed to a delivery that is wrong.
SETTLED_ERRORS = frozenset({"AlreadyServed", "RequestClosed", "DeadlinePassed"})


class TxSender:
    """One sender per key: allocates nonces locally and sends EIP-1559 transactions to the coordinator."""

    def __init__(
        self,
        w3: AsyncWeb3[Any],
        account: LocalAccount,
        coordinator: ChecksumAddress,
        abi: CoordinatorAbi,
        *,
        max_fee_per_gas_wei: int,
        priority_fee_wei: int,
        receipt_timeout_s: float,
    ) -> None:
        self._w3 = w3
        self._account = account
        self._coordinator = coordinator
        self._abi = abi
        self._max_fee = max_fee_per_gas_wei
        self._priority_fee = min(priority_fee_wei, max_fee_per_gas_wei)
        self._receipt_timeout_s = receipt_timeout_s
        self._nonce_lock = asyncio.Lock()
        self._next_nonce: int | None = None
        self._chain_id: int | None = None

    @property
    def address(self) -> ChecksumAddress:
        return self._account.address

    async def start(self) -> None:
        """Syncs the nonce counter and chain id from the chain."""
        self._chain_id = await self._w3.eth.chain_id
        self._next_nonce = await self._w3.eth.get_transaction_count(self.address, "pending")
        log.info("sender %s ready: chain %d, next nonce %d", self.address, self._chain_id, self._next_nonce)

    async def deliver(self, request_id: int, output: bytes) -> Receipt:
        """Delivers `output` for `request_id`.

        Raises `AlreadyFulfilled` if the request is settled, `TxReverted` if the delivery would revert, and
        `RpcUnavailable` (retryable) if the RPC could not be reached.
        """
        calldata = self._abi.deliver_calldata(request_id, output)
        return await self._rpc(self._simulate_and_send(calldata, f"deliver({request_id})"), f"deliver({request_id})")

    async def report_failure(self, request_id: int, reason: str) -> Receipt:
        """Tells the coordinator this node cannot serve `request_id`; same errors as `deliver`."""
        calldata = self._abi.encode_call("reportFailure", request_id, reason[:256])
        action = f"reportFailure({request_id})"
        return await self._rpc(self._simulate_and_send(calldata, action), action)

    async def _rpc(self, call: Awaitable[Receipt], action: str) -> Receipt:
        try:
            return await call
        except TRANSPORT_ERRORS as exc:
            raise RpcUnavailable(f"{action}: RPC unavailable ({type(exc).__name__}: {exc})") from None

    async def _simulate_and_send(self, calldata: bytes, action: str) -> Receipt:
        tx: dict[str, Any] = {"from": self.address, "to": self._coordinator, "data": calldata}
        try:
            gas_estimate = await self._w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
        except ContractLogicError as exc:
            reverted = as_reverted(exc, self._abi, action)
            if reverted.error in SETTLED_ERRORS:
                raise AlreadyFulfilled(str(reverted), error=reverted.error, args=reverted.error_args) from None
            raise reverted from None
        return await self._send(tx, int(gas_estimate * GAS_MARGIN))

    async def _fees(self) -> tuple[int, int]:
        block = await self._w3.eth.get_block("latest")
        base_fee = int(block.get("baseFeePerGas", 0))
        max_fee = min(self._max_fee, 2 * base_fee + self._priority_fee)
        return max_fee, min(self._priority_fee, max_fee)

    async def _send(self, tx: dict[str, Any], gas: int) -> Receipt:
        if self._next_nonce is None or self._chain_id is None:
            raise RuntimeError("TxSender.start() was not awaited")
        max_fee, priority_fee = await self._fees()
        async with self._nonce_lock:
            nonce = self._next_nonce
            signed = self._account.sign_transaction(
                {
                    **tx,
                    "gas": gas,
                    "nonce": nonce,
                    "chainId": self._chain_id,
                    "maxFeePerGas": max_fee,
                    "maxPriorityFeePerGas": priority_fee,
                    "type": 2,
                }
            )
            tx_hash = await self._w3.eth.send_raw_transaction(signed.raw_transaction)
            self._next_nonce = nonce + 1
        try:
            receipt = await self._w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self._receipt_timeout_s, poll_latency=0.05
            )
        except TimeExhausted:
            raise TxReverted(f"tx 0x{tx_hash.hex()} not mined within {self._receipt_timeout_s} s") from None
        if receipt["status"] != 1:
            raise TxReverted(f"tx 0x{tx_hash.hex()} reverted on-chain (nonce {nonce})")
        return Receipt(
            tx_hash="0x" + tx_hash.hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            nonce=nonce,
        )
