"""Coordinator ABI access from the forge build artifacts: event decoding, calldata, revert decoding.

Guarantees: selectors, topics and error names all come from the compiled ABI, never from hand-copied hex, so
they cannot drift from the contract.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

# Re-exported (`as`): the node's modules read the artifacts through this one.
from node.chain.artifacts import canonical_type as _canonical_type
from node.chain.artifacts import load_artifact as load_artifact
from node.chain.artifacts import signature as signature
from node.chain.commitments import module_address
from node.chain.reverts import DecodedError, ErrorCatalog
from node.errors import ConfigError

#: The zero address: no verifier (and ETH as a payment token).
ZERO_ADDRESS = ChecksumAddress("0x0000000000000000000000000000000000000000")  # type: ignore[arg-type]

#: The events that settle a delivery (plus the verification events, where the ABI has them).
OUTCOME_EVENTS = ("RequestFulfilled", "FailureReported", "DeliverySkipped")


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """A `RequestCreated` event, with where it was seen."""

    request_id: int
    model_id: bytes
    consumer: ChecksumAddress
    input: bytes
    token: ChecksumAddress
    fee_per_node_wei: int
    callback_gas_limit: int
    redundancy: int
    deadline: int
    #: The request's verifier (the zero address for a plain request): a non-zero one means every delivery needs a
    #: proof for it (`deliverWithProof`).
    verifier: ChecksumAddress
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int


class CoordinatorAbi:
    """Encodes and decodes what the node exchanges with the coordinator, from its compiled ABI."""

    def __init__(
        self, abi: list[dict[str, Any]], consensus_module: str | None = None, reverts: ErrorCatalog | None = None
    ) -> None:
        """`abi`: the Coordinator's (with the consensus entries, `from_artifacts`); `reverts`: the errors reverts
        are named with (default: those of `abi`; `from_artifacts` gives every Infera contract's)."""
        self.abi = abi
        #: The coordinator's `ConsensusModule` (`at`): a request naming it as its verifier is a consensus request.
        self.consensus_module = consensus_module
        self._functions = {e["name"]: e for e in abi if e["type"] == "function"}
        self._events = {e["name"]: e for e in abi if e["type"] == "event"}
        #: The revert decoder (node/chain/reverts.py).
        self.reverts = reverts if reverts is not None else ErrorCatalog([("Coordinator", abi)])
        created = self._events["RequestCreated"]
        self.request_created_topic = "0x" + keccak(text=signature(created)).hex()
        data_fields = [p for p in created["inputs"] if not p["indexed"]]
        self._created_data_types = [_canonical_type(p) for p in data_fields]
        self._created_data_names = [p["name"] for p in data_fields]
        self._deliver_selector = self.selector("deliver")
        self._last_block_hash, self._last_model_id = "", b""
        self._outcome_topics = {
            "0x" + keccak(text=signature(self._events[name])).hex(): name
            for name in (*OUTCOME_EVENTS, "VerificationPending", "DeliveryRejected", "Committed")
            if name in self._events
        }

    @classmethod
    def from_artifacts(cls, artifacts_dir: Path | None = None) -> CoordinatorAbi:
        """The Coordinator's ABI merged with the consensus ABI it serves through its `ConsensusModule` (at the
        Coordinator's address, through its fallback: `commit`, `reveal`, the consensus events and errors)."""
        abi = merge_abis(load_artifact("Coordinator", artifacts_dir).abi, consensus_abi(artifacts_dir))
        return cls(abi, reverts=ErrorCatalog.from_artifacts(artifacts_dir))

    def at(self, coordinator: str) -> CoordinatorAbi:
        """This ABI for the coordinator at `coordinator`: it knows that coordinator's consensus module
        (node/chain/consensus.py `module_address`), so `is_consensus` can tell consensus requests."""
        consensus = module_address(coordinator) if "commit" in self._functions else None
        return CoordinatorAbi(self.abi, consensus, self.reverts)

    def is_consensus(self, verifier: str) -> bool:
        """Whether a request naming `verifier` is a consensus request of this ABI's coordinator (`at`)."""
        return self.consensus_module is not None and verifier.lower() == self.consensus_module.lower()

    def topic(self, event: str) -> str:
        """The 0x-hex topic 0 of `event` (from the ABI); raises KeyError for an event the ABI does not have."""
        return "0x" + keccak(text=signature(self._events[event])).hex()

    def selector(self, function: str) -> bytes:
        return keccak(text=signature(self._functions[function]))[:4]

    def encode_call(self, function: str, *args: Any) -> bytes:
        entry = self._functions[function]
        types = [_canonical_type(p) for p in entry["inputs"]]
        return self.selector(function) + abi_encode(types, list(args))

    def decode_result(self, function: str, data: bytes) -> tuple[Any, ...]:
        """The return values of a call of `function` (from its ABI outputs); raises eth_abi's errors for data that
        does not decode."""
        types = [_canonical_type(p) for p in self._functions[function]["outputs"]]
        return tuple(abi_decode(types, data))

    def deliver_calldata(self, request_id: int, output: bytes) -> bytes:
        return self._deliver_selector + abi_encode(["uint256", "bytes"], [request_id, output])

    def decode_request_created(self, log: Any) -> InferenceRequest:
        """Decodes a `RequestCreated` log, raw JSON-RPC (hex strings) or as web3 formats it (bytes, ints)."""
        topics = log["topics"]
        fields = dict(
            zip(self._created_data_names, abi_decode(self._created_data_types, as_bytes(log["data"])), strict=True)
        )
        tx_hash = log["transactionHash"]
        # A block's requests share its hash and mostly one model: one object each, not one per request (a block of
        # thousands of requests is held in memory at once).
        block_hash, model = _hex(log["blockHash"]), as_bytes(topics[2])
        if block_hash == self._last_block_hash:
            block_hash = self._last_block_hash
        if model == self._last_model_id:
            model = self._last_model_id
        self._last_block_hash, self._last_model_id = block_hash, model
        return InferenceRequest(
            request_id=int.from_bytes(as_bytes(topics[1]), "big"),
            model_id=model,
            consumer=_checksum(as_bytes(topics[3])[12:]),
            input=bytes(fields["input"]),
            token=_checksum(fields["token"]),
            fee_per_node_wei=int(fields["feePerNode"]),
            callback_gas_limit=int(fields["callbackGasLimit"]),
            redundancy=int(fields["redundancy"]),
            deadline=int(fields["deadline"]),
            verifier=_checksum(fields["verifier"]),
            block_number=as_int(log["blockNumber"]),
            block_hash=block_hash,
            tx_hash=_hex(tx_hash),
            log_index=as_int(log["logIndex"]),
        )

    def delivery_outcomes(self, logs: list[Any], node: str, coordinator: str | None = None) -> dict[int, str]:
        """What a mined delivery transaction did for `node`, by request id, read from its receipt's logs:
        "fulfilled", "reported", "pending" (held for an optimistic verdict), "rejected" (the verifier refused the
        output), "committed" (a consensus request's commitment), or the name of the error a batch item was skipped
        with. Only logs emitted by `coordinator` count (a consumer's callback runs inside the delivery and can emit
        any log it likes), and a log that does not decode is passed over (never an exception: a receipt must always
        settle)."""
        node_topic = "0x" + bytes.fromhex(node.lower().removeprefix("0x")).rjust(32, b"\0").hex()
        emitter = coordinator.lower() if coordinator is not None else None
        outcomes: dict[int, str] = {}
        for raw in logs:
            try:
                if emitter is not None and str(raw.get("address", "")).lower() != emitter:
                    continue
                topics = [_hex(t) for t in raw["topics"]]
                name = self._outcome_topics.get(topics[0]) if topics else None
                if name is None or len(topics) < 3 or topics[2] != node_topic:
                    continue
                request_id = int(topics[1], 16)
                if name == "RequestFulfilled":
                    outcomes[request_id] = "fulfilled"
                elif name == "FailureReported":
                    outcomes[request_id] = "reported"
                elif name == "VerificationPending":
                    outcomes[request_id] = "pending"
                elif name == "DeliveryRejected":
                    outcomes[request_id] = "rejected"
                elif name == "Committed":
                    outcomes[request_id] = "committed"
                else:
                    (selector,) = abi_decode(["bytes4"], as_bytes(raw["data"]))
                    outcomes[request_id] = self.reverts.name_of(bytes(selector))
            except Exception:  # a log of any shape is passed over, the rest still read
                continue
        return outcomes

    def fulfilled_details(self, logs: list[Any], node: str, coordinator: str) -> dict[int, dict[str, Any]]:
        """The non-indexed fields of each `RequestFulfilled` the `coordinator` emitted for `node` in a receipt's
        logs, by request id (`callbackOk`, `outputHash`, and `fee` where the event carries it); logs that do not
        decode are passed over."""
        return self.event_fields("RequestFulfilled", logs, node, coordinator)

    def event_fields(self, event: str, logs: list[Any], node: str, coordinator: str) -> dict[int, dict[str, Any]]:
        """The non-indexed fields of each `event` (one indexed by request id, then node: `RequestFulfilled`,
        `VerificationPending`, ...) the `coordinator` emitted for `node` in `logs`, by request id; logs that do not
        decode are passed over."""
        entry = self._events[event]
        topic = "0x" + keccak(text=signature(entry)).hex()
        fields = [p for p in entry["inputs"] if not p["indexed"]]
        types, names = [_canonical_type(p) for p in fields], [p["name"] for p in fields]
        node_topic = "0x" + bytes.fromhex(node.lower().removeprefix("0x")).rjust(32, b"\0").hex()
        found: dict[int, dict[str, Any]] = {}
        for raw in logs:
            try:
                topics = [_hex(t) for t in raw["topics"]]
                if str(raw.get("address", "")).lower() != coordinator.lower() or topics[0] != topic:
                    continue
                if len(topics) < 3 or topics[2] != node_topic:
                    continue
                found[int(topics[1], 16)] = dict(zip(names, abi_decode(types, as_bytes(raw["data"])), strict=True))
            except Exception:  # a log of any shape is passed over
                continue
        return found

    def decode_error(self, data: bytes) -> DecodedError:
        """Names revert `data` (node/chain/reverts.py `ErrorCatalog.decode`: Infera's custom errors, `Error(string)`,
        `Panic(uint256)`); never raises."""
        return self.reverts.decode(data)


def consensus_abi(artifacts_dir: Path | None = None) -> list[dict[str, Any]]:
    """The consensus ABI (`IConsensus`: what the Coordinator serves through its `ConsensusModule`) from the forge
    build (empty for a build without it: no consensus requests)."""
    try:
        return load_artifact("IConsensus", artifacts_dir).abi
    except ConfigError:
        return []


def merge_abis(*abis: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of `abis` in order, each function, event and error once (by its signature): contracts that share
    interfaces repeat them."""
    seen: set[tuple[str, str]] = set()
    merged: list[dict[str, Any]] = []
    for entry in (e for abi in abis for e in abi):
        key = (entry["type"], signature(entry) if "name" in entry else entry["type"])
        if key not in seen:
            seen.add(key)
            merged.append(entry)
    return merged


def as_bytes(value: Any) -> bytes:
    """Bytes from a JSON-RPC hex string ("0x…") or from bytes-like values web3 returns."""
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    return bytes(value)


def as_int(value: Any) -> int:
    """An int from a JSON-RPC quantity ("0x1a") or an int web3 already decoded."""
    return int(value, 16) if isinstance(value, str) else int(value)


@functools.lru_cache(maxsize=4096)
def _checksum(address: bytes | str) -> ChecksumAddress:
    """EIP-55 form of an address (a keccak each): consumers and tokens repeat from request to request."""
    return to_checksum_address(address)


def _hex(value: Any) -> str:
    """A 32-byte hash as 0x-hex, whether web3 gave it as bytes or as a string."""
    return value.lower() if isinstance(value, str) else "0x" + bytes(value).hex()


def model_id(name: str) -> bytes:
    """On-chain id of a model name: keccak256 of its UTF-8 bytes."""
    return keccak(text=name)
