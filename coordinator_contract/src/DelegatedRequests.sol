// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ICoordinator} from "./interfaces/ICoordinator.sol";
import {IDelegatingConsumer} from "./interfaces/IDelegatingConsumer.sol";
import {Signatures} from "./lib/Signatures.sol";

/// @title DelegatedRequests
/// @notice The Coordinator's EIP-712 checks of requests signed off-chain by a consumer's delegated signer.
/// @dev Guarantees: the domain binds the chain id and this contract; a nonce works once per consumer; only the
/// consumer's current `delegatedSigner()` may sign (rotating it voids the old signer's unused signatures); signatures
/// are 65 bytes `r ‖ s ‖ v` with low `s`.
abstract contract DelegatedRequests {
    bytes32 public constant DELEGATED_REQUEST_TYPEHASH = keccak256(
        "DelegatedRequest(address consumer,bytes32 modelId,bytes32 inputHash,uint32 callbackGasLimit,uint16 redundancy,"
        "address token,uint256 feePerNode,uint256 nonce,uint64 expiry,uint64 deadline)"
    );
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    /// @notice Delegated-request nonces already used, by consumer.
    mapping(address consumer => mapping(uint256 nonce => bool)) public nonceUsed;

    /// @notice The EIP-712 domain separator: binds signatures to this chain and this contract.
    function domainSeparator() public view returns (bytes32) {
        return keccak256(
            abi.encode(
                DOMAIN_TYPEHASH, keccak256("Infera Coordinator"), keccak256("1"), block.chainid, address(this)
            )
        );
    }

    /// @notice The digest a consumer's delegated signer signs for `req` (EIP-712 typed data).
    function delegatedRequestDigest(ICoordinator.DelegatedRequest calldata req)
        public
        view
        returns (bytes32)
    {
        return keccak256(
            abi.encodePacked(
                "\x19\x01", domainSeparator(), keccak256(abi.encode(DELEGATED_REQUEST_TYPEHASH, req))
            )
        );
    }

    /// @dev Checks that `req` is unexpired, signed by its consumer's current delegated signer over `input`, with an
    /// unused nonce; then uses the nonce.
    function _useDelegation(
        ICoordinator.DelegatedRequest calldata req,
        bytes calldata input,
        bytes calldata signature
    ) internal {
        if (block.timestamp > req.expiry) {
            revert ICoordinator.DelegationExpired(req.expiry);
        }
        bytes32 given = keccak256(input);
        if (given != req.inputHash) revert ICoordinator.InputMismatch(req.inputHash, given);
        if (nonceUsed[req.consumer][req.nonce]) revert ICoordinator.NonceUsed(req.consumer, req.nonce);
        address signer = Signatures.recover(delegatedRequestDigest(req), signature);
        if (signer == address(0) || signer != _delegatedSignerOf(req.consumer)) {
            revert ICoordinator.InvalidSignature();
        }
        nonceUsed[req.consumer][req.nonce] = true;
    }

    /// @dev The consumer's current delegated signer, or zero if it has none (or is not a contract that says).
    function _delegatedSignerOf(address consumer) internal view returns (address) {
        if (consumer.code.length == 0) return address(0);
        (bool ok, bytes memory ret) =
            consumer.staticcall{gas: 50_000}(abi.encodeCall(IDelegatingConsumer.delegatedSigner, ()));
        if (!ok || ret.length < 32) return address(0);
        return abi.decode(ret, (address));
    }
}
