// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ICoordinator} from "./interfaces/ICoordinator.sol";
import {Escrow} from "./Escrow.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {IVerifier} from "./interfaces/IVerifier.sol";
import {IDelegatingConsumer} from "./interfaces/IDelegatingConsumer.sol";

/// @title Coordinator
/// @notice Takes inference requests, escrows their fees, and settles deliveries and failure reports from active
/// staked nodes.
/// @dev Guarantees:
/// - Escrow at request time: `feePerNode * redundancy` is held before any node works, in ETH or an ERC-20; the
///   protocol fee (≤ 10%) is frozen per request. Balances are pulled with `withdraw`, never pushed.
/// - Each active node acts at most once per request (deliver or report failure); at most `redundancy` deliveries
///   are paid, each once.
/// - Failure rule: a request fails only when `max(redundancy, minFailureReports)` distinct nodes reported failure,
///   so one node cannot deny service that others can still give; then the unused escrow goes back to the consumer.
///   After the deadline the consumer reclaims the escrow of slots nobody served. No request waits forever.
/// - Verification: a request may name a verifier the registry approved. Its deliveries need a proof; a node is paid
///   and the consumer called back only after the verifier found the output valid, or (optimistic verifiers) after its
///   window passed without a verdict. An output found invalid is never handed over and its slot reopens for another
///   node (refunded instead if the request already closed); the verifier slashes the node through the registry.
/// - Delegated requests (EIP-712): a request signed by the consumer's current delegated signer is created and
///   delivered by a node in one transaction, paid from the consumer's balance here; the domain binds chain id and
///   this contract, a per-consumer nonce stops replays, and rotating the signer voids the old signer's signatures.
/// - Callback isolation: the consumer runs with exactly its `callbackGasLimit`, in a call whose return data is never
///   copied, after every state change: a reverting, gas-hungry or re-entrant consumer cannot revert a delivery or
///   cost the node more than the limit the consumer chose; a node cannot starve the callback (63/64 rule checked).
contract Coordinator is ICoordinator, Escrow {
    uint16 public constant MAX_PROTOCOL_FEE_BPS = 1_000;
    /// @dev Error callbacks are not paid for by the consumer: they get at most this much gas.
    uint32 public constant MAX_ERROR_CALLBACK_GAS = 100_000;
    /// @dev Gas a verifier may use inside a delivery; the node pays for it.
    uint256 public constant MAX_VERIFIER_GAS = 1_000_000;
    bytes32 public constant DELEGATED_REQUEST_TYPEHASH = keccak256(
        "DelegatedRequest(address consumer,bytes32 modelId,bytes32 inputHash,uint32 callbackGasLimit,uint16 redundancy,"
        "address token,uint256 feePerNode,uint256 nonce,uint64 expiry,uint64 deadline)"
    );
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    /// @dev secp256k1n / 2: signatures with a larger `s` are malleable copies and are refused.
    uint256 private constant MAX_S = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    struct Request {
        // slot 0
        address consumer;
        uint64 deadline;
        uint16 redundancy;
        uint16 delivered;
        // slot 1
        address token;
        uint32 callbackGasLimit;
        uint16 protocolFeeBps;
        uint16 failures;
        Status status;
        // slot 2
        uint256 feePerNode;
    }

    /// @dev Only for requests that asked for verification.
    struct Verification {
        address verifier;
        uint16 pending;
    }

    /// @dev A node's output awaiting (or past) an optimistic verdict.
    struct PendingDelivery {
        bytes32 outputHash;
        uint64 verdictBy;
        bool verified;
    }

    INodeRegistry public immutable registry;
    address public owner;
    uint16 public protocolFeeBps;
    address public protocolFeeRecipient;
    uint256 public minFee;
    uint32 public maxCallbackGasLimit;
    uint32 public maxInputBytes;
    uint32 public maxOutputBytes;
    uint16 public maxRedundancy;
    uint16 public minFailureReports;
    uint64 public maxDeadlineWindow;
    /// @notice Deadline of requests made with the short `requestInference` form, from `block.timestamp`.
    uint64 public defaultDeadlineWindow = 1 hours;
    uint256 public nextRequestId = 1;
    /// @notice Whether a node already acted on a request (reported, delivered with a proof, or delivered to a
    /// redundant request); a one-node request's delivery closes the request instead.
    mapping(uint256 requestId => mapping(address node => bool)) public served;
    mapping(uint256 => Request) internal _requests;
    /// @notice The verifier of a request (zero if none) and its deliveries awaiting or refused a verdict.
    mapping(uint256 requestId => Verification) public verifications;
    /// @notice Delegated-request nonces already used, by consumer.
    mapping(address consumer => mapping(uint256 nonce => bool)) public nonceUsed;
    /// @notice Outputs awaiting an optimistic verdict, by request and node.
    mapping(uint256 requestId => mapping(address node => PendingDelivery)) public pendingDeliveries;

    modifier onlyOwner() {
        if (msg.sender != owner) revert Unauthorized(msg.sender);
        _;
    }

    constructor(address owner_, INodeRegistry registry_) {
        owner = owner_;
        registry = registry_;
        protocolFeeRecipient = owner_;
        emit OwnershipTransferred(address(0), owner_);
        _setLimits(0, 2_000_000, 16 * 1024, 16 * 1024, 16, 2, 30 days);
    }

    // ----------------------------------------------------------------------------------------------- owner

    /// @notice Sets the protocol fee rate for requests made from now on (each request keeps its rate) and who receives
    /// protocol fees from now on (read at delivery time, also for older requests).
    function setProtocolFee(uint16 bps, address recipient) external onlyOwner {
        if (bps > MAX_PROTOCOL_FEE_BPS) revert ProtocolFeeTooHigh(bps, MAX_PROTOCOL_FEE_BPS);
        if (recipient == address(0)) revert InvalidLimit();
        protocolFeeBps = bps;
        protocolFeeRecipient = recipient;
        emit ProtocolFeeChanged(bps, recipient);
    }

    /// @notice Sets the protocol limits. `minFee`, `maxCallbackGasLimit`, `maxInputBytes`, `maxRedundancy` and
    /// `maxDeadlineWindow` apply to requests made from now on; `maxOutputBytes` and `minFailureReports` are read when a
    /// node delivers or reports, so they apply to open requests too.
    function setLimits(
        uint256 minFee_,
        uint32 maxCallbackGasLimit_,
        uint32 maxInputBytes_,
        uint32 maxOutputBytes_,
        uint16 maxRedundancy_,
        uint16 minFailureReports_,
        uint64 maxDeadlineWindow_
    ) external onlyOwner {
        _setLimits(
            minFee_,
            maxCallbackGasLimit_,
            maxInputBytes_,
            maxOutputBytes_,
            maxRedundancy_,
            minFailureReports_,
            maxDeadlineWindow_
        );
    }

    /// @notice Hands the owner role to `newOwner`.
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert InvalidLimit();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    // -------------------------------------------------------------------------------------------- requests

    /// @inheritdoc ICoordinator
    function requestInference(RequestParams calldata params, bytes calldata input)
        external
        payable
        returns (uint256 requestId)
    {
        return _request(params, input);
    }

    /// @inheritdoc ICoordinator
    function requestInference(bytes32 modelId, bytes calldata input, uint32 callbackGasLimit)
        external
        payable
        returns (uint256 requestId)
    {
        return _request(
            RequestParams({
                modelId: modelId,
                callbackGasLimit: callbackGasLimit,
                redundancy: 1,
                deadline: uint64(block.timestamp) + defaultDeadlineWindow,
                token: address(0),
                feePerNode: msg.value
            }),
            input
        );
    }

    /// @notice Like the full `requestInference`, but every delivery must pass `verifier` (approved in the registry)
    /// before the node is paid and the consumer called back.
    function requestVerifiedInference(RequestParams calldata params, bytes calldata input, address verifier)
        external
        payable
        returns (uint256 requestId)
    {
        if (!registry.isApprovedVerifier(verifier)) revert VerifierNotApproved(verifier);
        requestId = _request(params, input);
        verifications[requestId].verifier = verifier;
        emit VerificationRequired(requestId, verifier);
    }

    /// @notice After the deadline, credits the consumer with the escrow of slots nobody served.
    /// @dev Anyone may call it; the refund always goes to the consumer's balance.
    function reclaim(uint256 requestId) external returns (uint256 refund) {
        Request storage r = _requests[requestId];
        Status status = r.status;
        if (status == Status.None) revert UnknownRequest(requestId);
        if (status != Status.Open) revert RequestClosed(requestId, status);
        if (block.timestamp <= r.deadline) revert DeadlineNotPassed(requestId, r.deadline);
        r.status = Status.Reclaimed;
        refund = _unusedSlots(requestId, r) * r.feePerNode;
        address consumer = r.consumer;
        balanceOf[r.token][consumer] += refund;
        emit Reclaimed(requestId, consumer, refund);
    }

    /// @notice Creates the request `req` signed by its consumer's delegated signer and delivers `output` for it, in
    /// one transaction; the escrow comes from the consumer's balance. Other nodes of a redundant request then
    /// deliver with `deliver`.
    function deliverDelegated(
        DelegatedRequest calldata req,
        bytes calldata input,
        bytes calldata signature,
        bytes calldata output
    ) external returns (uint256 requestId) {
        if (!registry.isActive(msg.sender)) revert NodeNotActive(msg.sender);
        if (block.timestamp > req.expiry) revert DelegationExpired(req.expiry);
        bytes32 given = keccak256(input);
        if (given != req.inputHash) revert InputMismatch(req.inputHash, given);
        if (nonceUsed[req.consumer][req.nonce]) revert NonceUsed(req.consumer, req.nonce);
        address signer = _recover(delegatedRequestDigest(req), signature);
        if (signer == address(0) || signer != _delegatedSignerOf(req.consumer)) revert InvalidSignature();
        nonceUsed[req.consumer][req.nonce] = true;

        uint256 escrow = req.feePerNode * req.redundancy;
        uint256 available = balanceOf[req.token][req.consumer];
        if (available < escrow) revert InsufficientBalance(req.consumer, req.token, escrow, available);
        balanceOf[req.token][req.consumer] = available - escrow;

        requestId = _store(
            RequestParams({
                modelId: req.modelId,
                callbackGasLimit: req.callbackGasLimit,
                redundancy: req.redundancy,
                deadline: req.deadline,
                token: req.token,
                feePerNode: req.feePerNode
            }),
            input,
            req.consumer
        );
        emit DelegatedRequestCreated(requestId, req.consumer, req.nonce);
        _deliver(requestId, msg.sender, output);
    }

    // -------------------------------------------------------------------------------------------- delivery

    /// @inheritdoc ICoordinator
    function deliver(uint256 requestId, bytes calldata output) external returns (bool callbackOk) {
        if (!registry.isActive(msg.sender)) revert NodeNotActive(msg.sender);
        return _deliver(requestId, msg.sender, output);
    }

    /// @inheritdoc ICoordinator
    function reportFailure(uint256 requestId, string calldata reason) external {
        if (!registry.isActive(msg.sender)) revert NodeNotActive(msg.sender);
        _reportFailure(requestId, msg.sender, reason);
    }

    /// @inheritdoc ICoordinator
    function deliverBatch(BatchItem[] calldata items) external returns (uint256 settled) {
        if (!registry.isActive(msg.sender)) revert NodeNotActive(msg.sender);
        for (uint256 i; i < items.length; ++i) {
            // Each item runs in its own call frame: a bad item reverts alone and is reported, the rest settle.
            try this.settleBatchItem(msg.sender, items[i]) {
                ++settled;
            } catch (bytes memory reason) {
                // casting to 'bytes4' is safe because it keeps the error selector, the first 4 bytes
                // forge-lint: disable-next-line(unsafe-typecast)
                emit DeliverySkipped(items[i].requestId, msg.sender, bytes4(reason));
            }
        }
    }

    /// @notice Delivers `output` with `proof` for a request that asked for verification. Paid and handed to the
    /// consumer at once if the verifier finds it valid; refused (its slot reopens) if invalid; held for an optimistic
    /// verdict otherwise, then settled with `finalizeDelivery`.
    function deliverWithProof(uint256 requestId, bytes calldata output, bytes calldata proof)
        external
        returns (IVerifier.Verdict verdict)
    {
        if (!registry.isActive(msg.sender)) revert NodeNotActive(msg.sender);
        Verification storage v = verifications[requestId];
        address verifier = v.verifier;
        if (verifier == address(0)) revert NoVerifier(requestId);
        if (output.length > maxOutputBytes) revert OutputTooLarge(output.length, maxOutputBytes);
        Request storage r = _claimSlot(requestId, msg.sender, false);
        if (_unusedSlots(requestId, r) == 0) revert NoSlotLeft(requestId);

        try IVerifier(verifier).verify{gas: MAX_VERIFIER_GAS}(requestId, msg.sender, output, proof) returns (
            IVerifier.Verdict verdict_
        ) {
            verdict = verdict_;
        } catch {
            revert VerifierFailed(requestId, verifier);
        }
        if (verdict == IVerifier.Verdict.Valid) {
            _settleDelivery(requestId, r, msg.sender, output);
        } else if (verdict == IVerifier.Verdict.Invalid) {
            emit DeliveryRejected(requestId, msg.sender);
        } else {
            uint64 window;
            try IVerifier(verifier).window{gas: 50_000}() returns (uint64 w) {
                window = w;
            } catch {
                revert VerifierFailed(requestId, verifier);
            }
            v.pending += 1;
            uint64 verdictBy = uint64(block.timestamp) + window;
            pendingDeliveries[requestId][msg.sender] =
                PendingDelivery({outputHash: keccak256(output), verdictBy: verdictBy, verified: false});
            emit VerificationPending(requestId, msg.sender, keccak256(output), verdictBy);
        }
    }

    /// @notice The optimistic verifier's verdict on `node`'s output, within its window.
    function resolveVerification(uint256 requestId, address node, bool valid) external {
        Verification storage v = verifications[requestId];
        if (msg.sender != v.verifier) revert NotTheVerifier(requestId, msg.sender);
        PendingDelivery storage p = pendingDeliveries[requestId][node];
        if (p.verdictBy == 0 || p.verified) revert NothingPending(requestId, node);
        if (block.timestamp > p.verdictBy) revert VerdictTooLate(requestId, p.verdictBy);
        if (valid) {
            p.verified = true;
        } else {
            delete pendingDeliveries[requestId][node];
            v.pending -= 1;
            emit DeliveryRejected(requestId, node);
            Request storage r = _requests[requestId];
            // Once the request is closed (reclaimed or failed) nobody can take the slot again: refund it now, or
            // its escrow would stay here for good.
            if (r.status != Status.Open) balanceOf[r.token][r.consumer] += r.feePerNode;
        }
    }

    /// @notice Settles `node`'s verified output (or one whose verdict window passed without a verdict): the node is
    /// paid and the consumer called back. `output` must be the bytes delivered with the proof (they are in that
    /// transaction's calldata), so anyone may settle it: the node, or the consumer if the node never does.
    function finalizeDelivery(uint256 requestId, address node, bytes calldata output)
        external
        returns (bool callbackOk)
    {
        PendingDelivery memory p = pendingDeliveries[requestId][node];
        if (p.verdictBy == 0) revert NothingPending(requestId, node);
        if (!p.verified && block.timestamp <= p.verdictBy) {
            revert VerificationNotDone(requestId, p.verdictBy);
        }
        bytes32 given = keccak256(output);
        if (given != p.outputHash) revert OutputMismatch(requestId, p.outputHash, given);
        delete pendingDeliveries[requestId][node];
        verifications[requestId].pending -= 1;
        // The slot's escrow was set aside when the output was delivered, so this settles even after the deadline.
        return _settleDelivery(requestId, _requests[requestId], node, output);
    }

    /// @dev One item of `deliverBatch`; only callable by the coordinator itself.
    function settleBatchItem(address node, BatchItem calldata item) external {
        if (msg.sender != address(this)) revert Unauthorized(msg.sender);
        if (item.failed) _reportFailure(item.requestId, node, string(item.data));
        else _deliver(item.requestId, node, item.data);
    }

    // --------------------------------------------------------------------------------------------- views

    /// @notice The state of one request.
    function getRequest(uint256 requestId) public view returns (RequestView memory v) {
        Request storage r = _requests[requestId];
        v = RequestView({
            consumer: r.consumer,
            deadline: r.deadline,
            redundancy: r.redundancy,
            delivered: r.delivered,
            failures: r.failures,
            callbackGasLimit: r.callbackGasLimit,
            protocolFeeBps: r.protocolFeeBps,
            status: r.status,
            token: r.token,
            feePerNode: r.feePerNode
        });
    }

    /// @notice The state of many requests in one call, for a node catching up.
    function getRequests(uint256[] calldata requestIds) external view returns (RequestView[] memory views) {
        views = new RequestView[](requestIds.length);
        for (uint256 i; i < requestIds.length; ++i) {
            views[i] = getRequest(requestIds[i]);
        }
    }

    /// @notice The EIP-712 domain separator: binds signatures to this chain and this contract.
    function domainSeparator() public view returns (bytes32) {
        return keccak256(
            abi.encode(
                DOMAIN_TYPEHASH, keccak256("Infera Coordinator"), keccak256("1"), block.chainid, address(this)
            )
        );
    }

    /// @notice The digest a consumer's delegated signer signs for `req` (EIP-712 typed data).
    function delegatedRequestDigest(DelegatedRequest calldata req) public view returns (bytes32) {
        return keccak256(
            abi.encodePacked(
                "\x19\x01", domainSeparator(), keccak256(abi.encode(DELEGATED_REQUEST_TYPEHASH, req))
            )
        );
    }

    /// @notice How many failure reports close `requestId`: `max(redundancy, minFailureReports)`.
    function failureQuorum(uint256 requestId) public view returns (uint256) {
        uint256 redundancy = _requests[requestId].redundancy;
        return redundancy > minFailureReports ? redundancy : minFailureReports;
    }

    // ------------------------------------------------------------------------------------------ internal

    function _request(RequestParams memory p, bytes calldata input) internal returns (uint256 requestId) {
        _collect(p.token, p.feePerNode * p.redundancy);
        return _store(p, input, msg.sender);
    }

    /// @dev Checks the parameters and records an escrowed request for `consumer`.
    function _store(RequestParams memory p, bytes calldata input, address consumer)
        internal
        returns (uint256 requestId)
    {
        if (p.callbackGasLimit == 0 || p.callbackGasLimit > maxCallbackGasLimit) {
            revert InvalidCallbackGasLimit(p.callbackGasLimit, maxCallbackGasLimit);
        }
        if (input.length == 0 || input.length > maxInputBytes) {
            revert InvalidInputLength(input.length, maxInputBytes);
        }
        if (p.redundancy == 0 || p.redundancy > maxRedundancy) {
            revert InvalidRedundancy(p.redundancy, maxRedundancy);
        }
        uint64 latest = uint64(block.timestamp) + maxDeadlineWindow;
        if (p.deadline <= block.timestamp || p.deadline > latest) revert InvalidDeadline(p.deadline, latest);
        if (p.feePerNode < minFee) revert FeeTooLow(p.feePerNode, minFee);

        requestId = nextRequestId++;
        _requests[requestId] = Request({
            consumer: consumer,
            deadline: p.deadline,
            redundancy: p.redundancy,
            delivered: 0,
            token: p.token,
            callbackGasLimit: p.callbackGasLimit,
            protocolFeeBps: protocolFeeBps,
            failures: 0,
            status: Status.Open,
            feePerNode: p.feePerNode
        });
        emit RequestCreated(
            requestId,
            p.modelId,
            consumer,
            input,
            p.token,
            p.feePerNode,
            p.callbackGasLimit,
            p.redundancy,
            p.deadline
        );
    }

    /// @dev Checks that `node` may act on `requestId` now, and marks it as having acted. A plain delivery to a
    /// one-node request is not recorded: it closes the request, so nothing can follow it (saves a 20k-gas slot).
    function _claimSlot(uint256 requestId, address node, bool plainDelivery)
        internal
        returns (Request storage r)
    {
        r = _requests[requestId];
        Status status = r.status;
        if (status == Status.None) revert UnknownRequest(requestId);
        if (status != Status.Open) revert RequestClosed(requestId, status);
        if (block.timestamp > r.deadline) revert DeadlinePassed(requestId, r.deadline);
        if (served[requestId][node]) revert AlreadyServed(requestId, node);
        if (!plainDelivery || r.redundancy > 1) served[requestId][node] = true;
    }

    function _deliver(uint256 requestId, address node, bytes calldata output)
        internal
        returns (bool callbackOk)
    {
        if (output.length > maxOutputBytes) revert OutputTooLarge(output.length, maxOutputBytes);
        if (verifications[requestId].verifier != address(0)) revert ProofRequired(requestId);
        return _settleDelivery(requestId, _claimSlot(requestId, node, true), node, output);
    }

    /// @dev Counts a delivery, pays the node, and hands the output to the consumer.
    function _settleDelivery(uint256 requestId, Request storage r, address node, bytes calldata output)
        internal
        returns (bool callbackOk)
    {
        uint16 delivered = r.delivered + 1;
        r.delivered = delivered;
        if (delivered == r.redundancy && r.status == Status.Open) r.status = Status.Fulfilled;

        uint256 fee = r.feePerNode;
        if (fee != 0) {
            uint256 protocolCut = fee * r.protocolFeeBps / 10_000;
            address token = r.token;
            balanceOf[token][node] += fee - protocolCut;
            if (protocolCut != 0) balanceOf[token][protocolFeeRecipient] += protocolCut;
        }

        callbackOk = _callWithExactGas(
            r.callbackGasLimit,
            r.consumer,
            abi.encodeWithSignature("rawFulfill(uint256,address,bytes)", requestId, node, output)
        );
        emit RequestFulfilled(requestId, node, keccak256(output), callbackOk);
    }

    function _reportFailure(uint256 requestId, address node, string memory reason) internal {
        Request storage r = _claimSlot(requestId, node, false);
        uint16 failures = r.failures + 1;
        r.failures = failures;
        emit FailureReported(requestId, node, reason);
        if (failures < failureQuorum(requestId)) return;

        r.status = Status.Failed;
        uint256 refund = _unusedSlots(requestId, r) * r.feePerNode;
        address consumer = r.consumer;
        balanceOf[r.token][consumer] += refund;
        uint32 gasLimit =
            r.callbackGasLimit < MAX_ERROR_CALLBACK_GAS ? r.callbackGasLimit : MAX_ERROR_CALLBACK_GAS;
        bool callbackOk = _callWithExactGas(
            gasLimit, consumer, abi.encodeWithSignature("rawFail(uint256,string)", requestId, reason)
        );
        emit RequestFailed(requestId, reason, refund, callbackOk);
    }

    /// @dev The consumer's current delegated signer, or zero if it has none (or is not a contract that says).
    function _delegatedSignerOf(address consumer) internal view returns (address) {
        if (consumer.code.length == 0) return address(0);
        (bool ok, bytes memory ret) =
            consumer.staticcall{gas: 50_000}(abi.encodeCall(IDelegatingConsumer.delegatedSigner, ()));
        if (!ok || ret.length < 32) return address(0);
        return abi.decode(ret, (address));
    }

    /// @dev ecrecover for a 65-byte (r, s, v) signature; zero for a malformed or malleable (high-s) one.
    function _recover(bytes32 digest, bytes calldata signature) internal pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (uint256(s) > MAX_S || (v != 27 && v != 28)) return address(0);
        return ecrecover(digest, v, r, s);
    }

    /// @dev Slots whose escrow is still free: not delivered and not awaiting a verdict. A rejected output frees its
    /// slot again, for another node (the rejected node has acted and cannot retry).
    function _unusedSlots(uint256 requestId, Request storage r) internal view returns (uint256) {
        return uint256(r.redundancy) - r.delivered - verifications[requestId].pending;
    }

    function _setLimits(
        uint256 minFee_,
        uint32 maxCallbackGasLimit_,
        uint32 maxInputBytes_,
        uint32 maxOutputBytes_,
        uint16 maxRedundancy_,
        uint16 minFailureReports_,
        uint64 maxDeadlineWindow_
    ) internal {
        if (
            maxCallbackGasLimit_ == 0 || maxInputBytes_ == 0 || maxOutputBytes_ == 0 || maxRedundancy_ == 0
                || minFailureReports_ == 0 || maxDeadlineWindow_ == 0
                || maxDeadlineWindow_ < defaultDeadlineWindow
        ) revert InvalidLimit();
        minFee = minFee_;
        maxCallbackGasLimit = maxCallbackGasLimit_;
        maxInputBytes = maxInputBytes_;
        maxOutputBytes = maxOutputBytes_;
        maxRedundancy = maxRedundancy_;
        minFailureReports = minFailureReports_;
        maxDeadlineWindow = maxDeadlineWindow_;
        emit LimitsChanged(
            minFee_,
            maxCallbackGasLimit_,
            maxInputBytes_,
            maxOutputBytes_,
            maxRedundancy_,
            minFailureReports_,
            maxDeadlineWindow_
        );
    }
}
