"""What the node exchanges with the SubscriptionManager, from its compiled ABI: its two logs the listener follows
(`SubscriptionCreated`, `SubscriptionCancelled`), `deliverInterval` calldata, the consumer's `subscriptionInput` call,
and the `IntervalFulfilled` outcomes of a delivery's receipt.

Guarantees: topics, selectors and error names come from the forge artifacts (never hand-copied hex); a log of any
other shape raises ValueError from `decode` (the listener logs and drops it), and `interval_outcomes` passes over
logs it cannot read (a receipt must always settle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from node.chain.contracts import as_bytes, as_int, load_artifact, signature
from node.jobs.intervals import Subscription, interval_job_id


@dataclass(frozen=True, slots=True)
class SubscriptionCancelled:
    """A `SubscriptionCancelled` log: intervals after `last_interval` will not be served; `refund_wei` went back to
    the consumer."""

    subscription_id: int
    last_interval: int
    refund_wei: int
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int


#: A subscription log as the listener hands it on.
SubscriptionEvent = Subscription | SubscriptionCancelled


def _hex(value: Any) -> str:
    return value.lower() if isinstance(value, str) else "0x" + bytes(value).hex()


def _topic(entry: dict[str, Any]) -> str:
    return "0x" + keccak(text=signature(entry)).hex()


class ManagerAbi:
    """Encodes and decodes the node's side of the SubscriptionManager (and of the consumer's `subscriptionInput`)."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        """`abi`: the SubscriptionManager's compiled ABI; raises KeyError when an event or function the node needs is
        missing from it."""
        self.abi = abi
        functions = {e["name"]: e for e in abi if e["type"] == "function"}
        events = {e["name"]: e for e in abi if e["type"] == "event"}
        self.created_topic = _topic(events["SubscriptionCreated"])
        self.cancelled_topic = _topic(events["SubscriptionCancelled"])
        self.fulfilled_topic = _topic(events["IntervalFulfilled"])
        self._deliver = keccak(text=signature(functions["deliverInterval"]))[:4]
        self._input = keccak(text="subscriptionInput(uint256,uint32)")[:4]
        created = [p for p in events["SubscriptionCreated"]["inputs"] if not p["indexed"]]
        self._created_types = [p["type"] for p in created]
        self._created_names = [p["name"] for p in created]

    @classmethod
    def from_artifacts(cls, artifacts_dir: Path | None = None) -> ManagerAbi:
        """From `<out>/SubscriptionManager.sol/SubscriptionManager.json`; raises ConfigError when it is not built."""
        return cls(load_artifact("SubscriptionManager", artifacts_dir).abi)

    @property
    def topics(self) -> list[str]:
        """topic0 of the logs the listener follows."""
        return [self.created_topic, self.cancelled_topic]

    def decode(self, log: Any) -> Subscription | SubscriptionCancelled:
        """A `SubscriptionCreated` or `SubscriptionCancelled` log (raw JSON-RPC or as web3 formats it); raises
        ValueError for any other log, and what eth-abi raises for a malformed one."""
        topics = [_hex(t) for t in log["topics"]]
        block, block_hash = as_int(log["blockNumber"]), _hex(log["blockHash"])
        tx_hash, index = _hex(log["transactionHash"]), as_int(log["logIndex"])
        subscription_id = int(topics[1], 16)
        if topics[0] == self.cancelled_topic:
            last, refund = abi_decode(["uint32", "uint256"], as_bytes(log["data"]))
            return SubscriptionCancelled(subscription_id, int(last), int(refund), block, block_hash, tx_hash, index)
        if topics[0] != self.created_topic:
            raise ValueError(f"not a subscription log (topic {topics[0]})")
        f = dict(zip(self._created_names, abi_decode(self._created_types, as_bytes(log["data"])), strict=True))
        return Subscription(
            subscription_id=subscription_id,
            model_id=bytes.fromhex(topics[2][2:]),
            consumer=to_checksum_address("0x" + topics[3][-40:]),
            token=to_checksum_address(f["token"]),
            fee_per_node_wei=int(f["feePerNode"]),
            callback_gas_limit=int(f["callbackGasLimit"]),
            redundancy=int(f["redundancy"]),
            period_s=int(f["period"]),
            intervals=int(f["intervals"]),
            start=int(f["start"]),
            active_intervals=int(f["intervals"]),
            block_number=block,
            block_hash=block_hash,
            tx_hash=tx_hash,
            log_index=index,
        )

    def deliver_calldata(self, subscription_id: int, interval: int, output: bytes) -> bytes:
        """`deliverInterval(subscriptionId, interval, output)`."""
        return self._deliver + abi_encode(["uint256", "uint32", "bytes"], [subscription_id, interval, output])

    def input_call(self, consumer: str, subscription_id: int, interval: int, block: int) -> list[Any]:
        """eth_call params of `consumer.subscriptionInput(subscriptionId, interval)` at block number `block`."""
        data = self._input + abi_encode(["uint256", "uint32"], [subscription_id, interval])
        return [{"to": consumer, "data": "0x" + data.hex()}, hex(block)]

    @staticmethod
    def decode_input(answer: Any) -> bytes:
        """The `bytes` a `subscriptionInput` call returned; raises ValueError (or eth-abi's error) for anything
        else (an account without code answers `0x`)."""
        raw = as_bytes(answer)
        if not raw:
            raise ValueError("subscriptionInput returned nothing (is the consumer a contract?)")
        (value,) = abi_decode(["bytes"], raw)
        return bytes(value)

    def interval_outcomes(self, logs: list[Any], node: str, manager: ChecksumAddress | str) -> dict[int, str]:
        """ "fulfilled" by interval job id, for each `IntervalFulfilled` of `node` the manager emitted in a receipt's
        `logs` (a consumer's callback can emit any log: only the manager's count). Never raises."""
        node_topic = "0x" + node.lower().removeprefix("0x").rjust(64, "0")
        outcomes: dict[int, str] = {}
        for raw in logs:
            try:
                if str(raw.get("address", "")).lower() != manager.lower():
                    continue
                topics = [_hex(t) for t in raw["topics"]]
                if len(topics) == 4 and topics[0] == self.fulfilled_topic and topics[3] == node_topic:
                    outcomes[interval_job_id(int(topics[1], 16), int(topics[2], 16))] = "fulfilled"
            except Exception:  # a log of any shape is passed over, the rest still read
                continue
        return outcomes


@dataclass(frozen=True)
class ManagerTarget:
    """The SubscriptionManager a node serves: its address and ABI (what the transaction layer sends interval
    deliveries to)."""

    address: ChecksumAddress
    abi: ManagerAbi
