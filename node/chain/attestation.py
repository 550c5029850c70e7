"""The AttestationVerifier's proof, made off-chain: the message an attestation key signs and the proof a node sends.

Guarantees: `attestation_message` is the 32-byte hash that `AttestationVerifier.attestationDigest` wraps as an
EIP-191 personal message, and `attestation_proof` is the `abi.encode(bytes32 modelDigest, bytes signature)` it
verifies (a 65-byte `r || s || v` signature, `v` 27 or 28, low `s`: eth-account's form).
tests/integration/test_devnet.py checks both against the contract on a real chain.
"""

from __future__ import annotations

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.crypto import keccak

#: Domain tag of the attested message, version 1 (`AttestationVerifier.ATTESTATION_TAG`).
ATTESTATION_TAG = keccak(text="InferaAttestation.v1")


def attestation_message(
    *,
    chain_id: int,
    coordinator: str,
    request_id: int,
    node: str,
    input_hash: bytes,
    output_hash: bytes,
    model_digest: bytes,
) -> bytes:
    """keccak256(abi.encode(tag, chainid, coordinator, requestId, node, inputHash, outputHash, modelDigest)): what the
    attestation key signs as a personal message. `input_hash` is keccak256 of the request's input, `output_hash` of
    the delivered output, `model_digest` names the weights the key is registered for."""
    return keccak(
        abi_encode(
            ["bytes32", "uint256", "address", "uint256", "address", "bytes32", "bytes32", "bytes32"],
            [ATTESTATION_TAG, chain_id, coordinator, request_id, node, input_hash, output_hash, model_digest],
        )
    )


def attestation_proof(private_key: bytes | str, model_digest: bytes, message: bytes) -> bytes:
    """The proof for `deliverWithProof`: `message` (from `attestation_message`) signed with `private_key` as an
    EIP-191 personal message, ABI-encoded with `model_digest`."""
    signed = Account.sign_message(encode_defunct(primitive=message), private_key)
    return abi_encode(["bytes32", "bytes"], [model_digest, bytes(signed.signature)])
