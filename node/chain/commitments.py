"""What a consensus request's commitment is, and the names of a consensus job's outcomes: pure functions and
constants, imported by every layer that touches consensus jobs (the scheduler stores a proof, delivery sends the
commit, tracking and refusals record it, receipts read it, node/chain/consensus.py reveals it). It imports no other
module of the node, so none of them import each other through it.
"""

from __future__ import annotations

import secrets

from eth_abi.abi import encode as abi_encode
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

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
