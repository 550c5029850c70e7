"""The delegated request's EIP-712 typing, read from the compiled ABI, never typed by hand.

`DelegatedTyping.from_abi` finds the `DelegatedRequest` struct in the coordinator's ABI of `deliverDelegated` (its
tuple argument: the `components` are the fields in order, the `internalType` "struct ICoordinator.DelegatedRequest"
names the type) and derives from it the EIP-712 type, the checks each field of a submitted request gets, and the
digest a consumer's signer signs (eth-account's EIP-712 encoder). The `DelegatedRequestCreated` topic comes from the
coordinator's ABI too, and the `delegatedSigner()` selector from the consumer interface's (`IDelegatingConsumer`).
The domain's name and version are the contract's constants, which no ABI holds (the coordinator has no EIP-5267
`eip712Domain()`): `DOMAIN_NAME`, `DOMAIN_VERSION`; the tests check the digest against the coordinator's own
`delegatedRequestDigest`.

Guarantees: a struct with a field type the node cannot check (anything but address, bytesN and uintN) stops the node
at start (`ConfigError`) instead of letting it accept requests it cannot verify; a request is accepted only with
exactly the struct's fields, each in its type's range; a signature is refused in every form the coordinator refuses
(not 65 bytes, v not 27/28, high s).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eth_account.messages import encode_typed_data
from eth_keys.constants import SECPK1_N as SECP256K1_N  # the curve order n (public)
from eth_keys.datatypes import Signature
from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak

from node.api.jobs import JobInputError
from node.chain.contracts import CoordinatorAbi, signature
from node.errors import ConfigError

#: The coordinator's EIP-712 domain (`domainSeparator()`), as its source declares it.
DOMAIN_NAME = "Infera Coordinator"
DOMAIN_VERSION = "1"
#: The function whose first argument is the signed struct.
DELIVER_DELEGATED = "deliverDelegated"
CREATED_EVENT = "DelegatedRequestCreated"
SIGNER_FUNCTION = "delegatedSigner"

_UINT = re.compile(r"uint(\d+)")
_BYTES = re.compile(r"bytes(\d+)")


@dataclass(frozen=True)
class DelegatedTyping:
    """The signed struct as the ABI declares it: its `name`, its `fields` ((name, ABI type), in order), and what the
    node reads and calls about it (`created_topic`, `signer_selector`)."""

    name: str
    fields: tuple[tuple[str, str], ...]
    #: Topic 0 of `DelegatedRequestCreated(requestId, consumer, nonce)`.
    created_topic: bytes
    #: Selector of the consumer's `delegatedSigner()`.
    signer_selector: bytes

    @classmethod
    def from_abi(cls, abi: CoordinatorAbi, consumer_abi: list[dict[str, Any]]) -> DelegatedTyping:
        """Reads the struct from `abi` (the coordinator's) and the signer's getter from `consumer_abi`
        (`IDelegatingConsumer`'s). Raises `ConfigError` when either lacks what the node needs."""
        entries = {(e["type"], e.get("name")): e for e in abi.abi}
        deliver = entries.get(("function", DELIVER_DELEGATED))
        created = entries.get(("event", CREATED_EVENT))
        getter = next((e for e in consumer_abi if e.get("type") == "function" and e["name"] == SIGNER_FUNCTION), None)
        if deliver is None or created is None or getter is None or not deliver["inputs"]:
            raise ConfigError(
                f"chain.artifacts_dir: the ABIs lack {DELIVER_DELEGATED}, {CREATED_EVENT} or {SIGNER_FUNCTION}()"
            )
        struct = deliver["inputs"][0]
        if struct["type"] != "tuple" or not str(struct.get("internalType", "")).startswith("struct "):
            raise ConfigError(f"chain.artifacts_dir: {DELIVER_DELEGATED}'s first argument is not a struct")
        fields = tuple((c["name"], c["type"]) for c in struct["components"])
        for name, kind in fields:
            if _bits(kind) is None:
                raise ConfigError(f"chain.artifacts_dir: cannot check {name} of type {kind} in a delegated request")
        return cls(
            name=struct["internalType"].removeprefix("struct ").rpartition(".")[2],
            fields=fields,
            created_topic=keccak(text=signature(created)),
            signer_selector=keccak(text=signature(getter))[:4],
        )

    @property
    def type_string(self) -> str:
        """The EIP-712 type, e.g. `DelegatedRequest(address consumer,bytes32 modelId,...)`."""
        return f"{self.name}({','.join(f'{kind} {name}' for name, kind in self.fields)})"

    def digest(self, req: dict[str, Any], chain_id: int, coordinator: str) -> bytes:
        """The EIP-712 digest the coordinator's `delegatedRequestDigest` computes for `req` (checked fields)."""
        signable = encode_typed_data(
            domain_data={
                "name": DOMAIN_NAME,
                "version": DOMAIN_VERSION,
                "chainId": chain_id,
                "verifyingContract": to_checksum_address(coordinator),
            },
            message_types={self.name: [{"name": name, "type": kind} for name, kind in self.fields]},
            message_data=req,
        )
        return keccak(b"\x19" + signable.version + signable.header + signable.body)

    def as_tuple(self, req: dict[str, Any]) -> tuple[Any, ...]:
        """The struct's values in ABI order (for `deliverDelegated`'s calldata)."""
        return tuple(req[name] for name, _ in self.fields)

    def parse(self, body: Any) -> tuple[dict[str, Any], bytes, bytes]:
        """The checked request (ABI values, field order), input and signature of a POST body. Raises
        `JobInputError` saying what to fix."""
        if not isinstance(body, dict) or set(body) != {"request", "input", "signature"}:
            raise JobInputError('body must be {"request": {...}, "input": "0x...", "signature": "0x..."}')
        raw = body["request"]
        if not isinstance(raw, dict):
            raise JobInputError(f"request must be a JSON object of the {self.name} fields")
        names = [name for name, _ in self.fields]
        missing, unknown = [f for f in names if f not in raw], sorted(set(raw) - set(names))
        if missing or unknown:
            raise JobInputError(
                f"request: missing {missing or 'nothing'}, unknown {unknown or 'nothing'}; fields: {self.type_string}"
            )
        req = {name: _check(raw[name], f"request.{name}", kind) for name, kind in self.fields}
        return req, hex_bytes(body["input"], "input"), hex_bytes(body["signature"], "signature")


def _bits(kind: str) -> int | None:
    """The size that bounds a checkable type's values (bits of a uintN, bytes of a bytesN, 160 for an address)."""
    if kind == "address":
        return 160
    match = _UINT.fullmatch(kind) or _BYTES.fullmatch(kind)
    return int(match.group(1)) if match else None


def _check(value: Any, where: str, kind: str) -> Any:
    if kind == "address":
        if not isinstance(value, str) or not is_address(value):
            raise JobInputError(f"{where} must be an address (0x + 40 hex digits)")
        return to_checksum_address(value)
    if kind.startswith("bytes"):
        return hex_bytes(value, where, length=_bits(kind))
    bits = _bits(kind) or 256
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,78}", value):
        value = int(value)  # large uint256 values may come as decimal strings
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**bits:
        raise JobInputError(f"{where} must be an integer in 0..2^{bits}-1 ({kind})")
    return value


def hex_bytes(value: Any, where: str, *, length: int | None = None) -> bytes:
    """The bytes of a 0x-prefixed hex string; `length` bytes exactly when given. Raises `JobInputError`."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise JobInputError(f"{where} must be a 0x-prefixed hex string")
    try:
        out = bytes.fromhex(value[2:])
    except ValueError:
        raise JobInputError(f"{where} is not valid hex") from None
    if length is not None and len(out) != length:
        raise JobInputError(f"{where} must be {length} bytes, got {len(out)}")
    return out


def recover(message_digest: bytes, sig: bytes) -> str:
    """The signer of a 65-byte (r, s, v) signature, refusing what the coordinator refuses (high s, v not 27/28)."""
    if len(sig) != 65:
        raise JobInputError(f"signature must be 65 bytes (r, s, v), got {len(sig)}")
    r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    if v not in (27, 28):
        raise JobInputError(f"signature v must be 27 or 28, got {v}")
    if not 0 < s <= SECP256K1_N // 2:
        raise JobInputError("signature s is in the upper half of the curve order (malleable); sign with low s")
    try:
        public = Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(message_digest)
    except Exception as exc:
        raise JobInputError(f"signature does not recover a key: {exc}") from None
    return str(public.to_checksum_address())
