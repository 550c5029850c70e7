"""Attestation of a container's outputs: a signature, by a key the container holds, over what it computed.

An `Attester` signs, for one on-chain request, the digest `AttestationVerifier` checks
(coordinator_contract/src/verifiers): `keccak256("\\x19Ethereum Signed Message:\\n32" ++ inner)` with
`inner = keccak256(abi.encode(keccak256("InferaAttestation.v1"), chainId, coordinator, requestId, node, inputHash,
outputHash, modelDigest))`, `inputHash` the keccak256 of the raw ABI input bytes and `outputHash` that of the raw
output bytes. The proof the node delivers is `abi.encode(bytes32 modelDigest, bytes signature)`, the signature 65
bytes r || s || v (v 27/28, low s).

What it proves: that a holder of the registered attester key signed this output for this input, request, node and
model digest. It does not prove the model ran as claimed: a key in a file can sign anything its holder likes (a
TEE-held key would bind it to measured code; this is not that).

Guarantees: the key file must be readable and writable by its owner only (mode 0600 or stricter) and hold a valid
secp256k1 key, or the container refuses to start, naming the file and what to do (the `chmod` to run); the key is
never logged or printed (the `Attester`'s repr shows only its address).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_abi.abi import encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak

#: The domain tag of an attestation (`keccak256("InferaAttestation.v1")` in the verifier).
ATTESTATION_TAG = keccak(text="InferaAttestation.v1")
#: The environment variable naming the key file when `--attestation-key-file` is not given.
KEY_FILE_ENV = "INFERA_ATTESTATION_KEY_FILE"


class AttestationError(ValueError):
    """A key file, model digest or attestation context that cannot be used; the message says what to fix."""


def attestation_hash(
    chain_id: int,
    coordinator: str,
    request_id: int,
    node: str,
    input_hash: bytes,
    output_hash: bytes,
    model_digest: bytes,
) -> bytes:
    """The 32-byte hash an attester signs (before the `personal_sign` prefix): keccak256 of the ABI encoding of the
    tag, `chain_id`, `coordinator`, `request_id`, `node`, `input_hash`, `output_hash` and `model_digest` (each hash
    32 bytes). Raises `AttestationError` for an address that is not one."""
    for what, address in (("coordinator", coordinator), ("node", node)):
        if not is_address(address):
            raise AttestationError(f"attestation {what} is not an address: {address!r}")
    return keccak(
        encode(
            ["bytes32", "uint256", "address", "uint256", "address", "bytes32", "bytes32", "bytes32"],
            [
                ATTESTATION_TAG,
                chain_id,
                to_checksum_address(coordinator),
                request_id,
                to_checksum_address(node),
                input_hash,
                output_hash,
                model_digest,
            ],
        )
    )


def attestation_digest(
    chain_id: int,
    coordinator: str,
    request_id: int,
    node: str,
    input_: bytes,
    output: bytes,
    model_digest: bytes,
) -> bytes:
    """The digest the signature is over (what `AttestationVerifier.attestationDigest` returns): the
    `"\\x19Ethereum Signed Message:\\n32"`-prefixed keccak256 of `attestation_hash` of the raw `input_` and `output`."""
    inner = attestation_hash(chain_id, coordinator, request_id, node, keccak(input_), keccak(output), model_digest)
    return keccak(b"\x19Ethereum Signed Message:\n32" + inner)


#: The order of secp256k1: a private key is an integer in [1, n - 1].
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def read_key_file(path: str | Path) -> bytes:
    """The 32-byte private key in `path` (hex, with or without 0x, surrounding whitespace ignored). Raises
    `AttestationError` when the file is missing, a directory, readable or writable by anyone but its owner, not text,
    or not a usable secp256k1 key (zero, or not below the curve order); the message never contains the file's
    content."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AttestationError(f"attestation key file {path} not found") from None
    except OSError as exc:
        raise AttestationError(f"attestation key file {path} cannot be read: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise AttestationError(f"attestation key file {path} is a directory; give the file that holds the key")
    if not stat.S_ISREG(mode):
        raise AttestationError(f"attestation key file {path} is not a regular file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AttestationError(
            f"attestation key file {path} is readable or writable by others (mode {stat.S_IMODE(mode):04o});"
            f" run `chmod 600 {path}`"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AttestationError(f"attestation key file {path} cannot be read: {exc.strerror}") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise AttestationError(
            f"attestation key file {path} is not text: it must hold a 32-byte private key as 64 hex digits"
        ) from None
    try:
        key = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise AttestationError(f"attestation key file {path} does not hold a 32-byte hex private key")
    if not 0 < int.from_bytes(key, "big") < SECP256K1_N:
        raise AttestationError(
            f"attestation key file {path} does not hold a valid secp256k1 private key (it must be above zero and below"
            " the curve order n); make a new key"
        )
    return key


def parse_digest(text: str) -> bytes:
    """A 32-byte model digest from hex (with or without 0x). Raises `AttestationError` otherwise."""
    try:
        digest = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise AttestationError(f"model digest must be 32 bytes of hex (a sha256), got {text!r}")
    return digest


def files_digest(paths: Iterable[Path], per_file: dict[str, str] | None = None) -> bytes:
    """The sha256 of a model's weight files: each file under `paths` (a folder is walked), in the order of their
    paths relative to it, hashed as its relative path, a zero byte, its length and its bytes. `per_file`, when
    given, gets each file's own sha256 (hex, as `sha256sum` prints it) by relative path, from the same read. Raises
    `AttestationError` when there is no file."""
    found: list[tuple[str, Path]] = []
    for root in paths:
        if root.is_dir():
            found += [(str(p.relative_to(root)), p) for p in root.rglob("*") if p.is_file()]
        elif root.is_file():
            found.append((root.name, root))
    if not found:
        raise AttestationError("the model has no weight files to digest; give --model-digest")
    sha = hashlib.sha256()
    for name, path in sorted(found):
        sha.update(name.encode() + b"\0" + path.stat().st_size.to_bytes(8, "big"))
        own = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
                own.update(chunk)
        if per_file is not None:
            per_file[name] = own.hexdigest()
    return sha.digest()


@dataclass(frozen=True)
class Attester:
    """Signs attestations with one key for one model digest (see the module)."""

    model_digest: bytes
    _key: bytes = field(repr=False)

    @property
    def address(self) -> str:
        """The attester's address: what the verifier's owner registers."""
        return str(Account.from_key(self._key).address)

    @classmethod
    def from_file(cls, path: str | Path, model_digest: bytes) -> Attester:
        """An attester with the key in `path` (`read_key_file`'s checks) for `model_digest` (32 bytes)."""
        if len(model_digest) != 32:
            raise AttestationError("model digest must be 32 bytes")
        return cls(model_digest, read_key_file(path))

    def sign(self, chain_id: int, coordinator: str, request_id: int, node: str, input_: bytes, output: bytes) -> bytes:
        """The 65-byte signature r || s || v (v 27/28, low s) over `attestation_digest`."""
        inner = attestation_hash(
            chain_id, coordinator, request_id, node, keccak(input_), keccak(output), self.model_digest
        )
        signed = Account.sign_message(encode_defunct(primitive=inner), self._key)
        return bytes(signed.signature)

    def proof(self, context: Any, input_: bytes, output: bytes) -> bytes:
        """The proof for an on-chain answer: `abi.encode(bytes32 modelDigest, bytes signature)`, bound to `context`
        (a wire `Attestation`: `chain_id`, `coordinator`, `request_id`, `node`). Raises `AttestationError` for a
        context that is not one."""
        chain_id, coordinator, request_id, node = check_context(context)
        signature = self.sign(chain_id, coordinator, request_id, node, input_, output)
        return encode(["bytes32", "bytes"], [self.model_digest, signature])


def check_context(context: Any) -> tuple[int, str, int, str]:
    """(chain id, coordinator, request id, node) of a wire `Attestation`. Raises `AttestationError` naming the field
    that is missing or of the wrong kind."""
    if not isinstance(context, dict):
        raise AttestationError("requires_proof needs an attestation object {chain_id, coordinator, request_id, node}")
    values: list[Any] = []
    for key in ("chain_id", "request_id"):
        value = context.get(key)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 2**256:
            raise AttestationError(f"attestation.{key} must be a non-negative integer (or its decimal string)")
        values.append(value)
    for key in ("coordinator", "node"):
        value = context.get(key)
        if not isinstance(value, str) or not is_address(value):
            raise AttestationError(f"attestation.{key} must be a 0x address")
        values.append(value)
    return values[0], values[2], values[1], values[3]


def key_file_from_env(given: str | None) -> str | None:
    """The key file to use: `given` (the command line's), else `$INFERA_ATTESTATION_KEY_FILE`, else None."""
    return given or os.environ.get(KEY_FILE_ENV) or None
