// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {VerifierBase} from "./VerifierBase.sol";
import {ICoordinator} from "../interfaces/ICoordinator.sol";
import {INodeRegistry} from "../interfaces/INodeRegistry.sol";
import {Signatures} from "../lib/Signatures.sol";

/// @title AttestationVerifier
/// @notice An atomic verifier (`window()` is 0): a delivery is valid iff its proof carries a signature, by an
/// attestation key the owner registered for the request's model and the named model digest, over this chain, this
/// Coordinator, the request, the delivering node, the input and the output.
/// @dev Proof: `abi.encode(bytes32 modelDigest, bytes signature)`, the signature 65 bytes `r ‖ s ‖ v` (`v` 27 or 28,
/// low `s`) over `attestationDigest(requestId, node, inputHash, keccak256(output), modelDigest)`, an EIP-191 personal
/// message (`eth_account`'s `sign_message(encode_defunct(primitive=inner))`, where `inner` is the 32-byte hash below):
///     inner  = keccak256(abi.encode(keccak256("InferaAttestation.v1"), chainid, coordinator, requestId, node,
///              inputHash, keccak256(output), modelDigest))
///     digest = keccak256("\x19Ethereum Signed Message:\n32" ‖ inner)
/// `inputHash` and `modelId` are those the Coordinator stored for the request (`verificationOf`).
/// What a valid proof proves: a holder of a key registered for (modelId, modelDigest) signed this output for this
/// input, this request and this node. Naming the node makes a proof useless to any other node (no copying). On TEE
/// hardware, where the key is sealed in the enclave that runs the model, that means "this enclave ran it". Where the
/// key is a file of the model container, as on the devnet, it proves only that whoever holds the file signed: not
/// that the model ran, nor which weights it used.
/// An invalid proof (wrong key, digest or fields, malformed or high-`s` signature) slashes the node
/// `min(slashAmount, stake)` to the request's consumer and returns `Invalid`: the Coordinator refuses the output and
/// reopens its slot. A proof that does not decode as `(bytes32, bytes)` reverts (the Coordinator's `VerifierFailed`):
/// nothing is counted and nobody is slashed.
contract AttestationVerifier is VerifierBase {
    /// @notice The owner allowed or revoked `key` as an attester of `modelId` with weights `modelDigest`.
    event AttesterChanged(address indexed key, bytes32 indexed modelId, bytes32 modelDigest, bool allowed);
    /// @notice `node`'s attestation for `requestId` did not verify (`signer` is who signed, zero if malformed);
    /// `slashed` wei of its stake went to the consumer.
    event AttestationRejected(
        uint256 indexed requestId, address indexed node, address signer, uint256 slashed
    );

    /// @notice Domain tag of the attested message, version 1.
    bytes32 public constant ATTESTATION_TAG = keccak256("InferaAttestation.v1");

    /// @notice Whether `key` may attest outputs of `modelId` computed with weights whose digest is `modelDigest`.
    mapping(address key => mapping(bytes32 modelId => mapping(bytes32 modelDigest => bool))) public
        isAttester;

    constructor(address owner_, ICoordinator coordinator_, INodeRegistry registry_, uint256 slashAmountWei)
        VerifierBase(owner_, coordinator_, registry_, slashAmountWei)
    {}

    /// @notice Allows (or revokes) `key` as an attester of `modelId` with weights `modelDigest`; owner only.
    function setAttester(address key, bytes32 modelId, bytes32 modelDigest, bool allowed) external onlyOwner {
        if (key == address(0)) revert InvalidParameter();
        isAttester[key][modelId][modelDigest] = allowed;
        emit AttesterChanged(key, modelId, modelDigest, allowed);
    }

    /// @notice `Valid` iff `proof` is an allowed attester's signature over this delivery (see the contract's notes);
    /// else slashes `node` and returns `Invalid`. Only the Coordinator calls it, inside `deliverWithProof`.
    function verify(uint256 requestId, address node, bytes calldata output, bytes calldata proof)
        external
        onlyCoordinator
        returns (Verdict)
    {
        (address signer, bool allowed) = _attester(requestId, node, keccak256(output), proof);
        if (allowed) return Verdict.Valid;
        uint256 slashed = _slash(node, coordinator.getRequest(requestId).consumer);
        emit AttestationRejected(requestId, node, signer, slashed);
        return Verdict.Invalid;
    }

    /// @notice 0: verdicts are given inside the delivery.
    function window() external pure returns (uint64) {
        return 0;
    }

    /// @notice The digest an attester signs for `node`'s output (hash `outputHash`) to `requestId`, whose input hash is
    /// `inputHash`, computed with weights `modelDigest`, on this chain and for this verifier's Coordinator.
    function attestationDigest(
        uint256 requestId,
        address node,
        bytes32 inputHash,
        bytes32 outputHash,
        bytes32 modelDigest
    ) public view returns (bytes32) {
        bytes32 inner = keccak256(
            abi.encode(
                ATTESTATION_TAG,
                block.chainid,
                address(coordinator),
                requestId,
                node,
                inputHash,
                outputHash,
                modelDigest
            )
        );
        return keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", inner));
    }

    /// @dev Who signed the proof's attestation of this delivery, and whether that key is allowed for the request's
    /// model with the proof's model digest.
    function _attester(uint256 requestId, address node, bytes32 outputHash, bytes calldata proof)
        internal
        view
        returns (address signer, bool allowed)
    {
        (, bytes32 modelId, bytes32 inputHash,) = coordinator.verificationOf(requestId);
        (bytes32 modelDigest, bytes memory signature) = abi.decode(proof, (bytes32, bytes));
        signer = Signatures.recover(
            attestationDigest(requestId, node, inputHash, outputHash, modelDigest), signature
        );
        allowed = signer != address(0) && isAttester[signer][modelId][modelDigest];
    }
}
