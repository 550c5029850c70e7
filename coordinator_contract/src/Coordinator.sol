// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ICoordinator} from "./interfaces/ICoordinator.sol";
import {CoordinatorCore} from "./CoordinatorCore.sol";
import {ConsensusModule} from "./ConsensusModule.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {IVerifier} from "./interfaces/IVerifier.sol";

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
/// - Every request ends: fulfilled (`redundancy` results), failed (error callback once), reclaimed after the deadline
///   (anyone calls `reclaim`: unserved escrow refunded, error callback once if a slot went unserved), or cancelled by
///   its consumer before any node acted (refund, no callback). A closed request takes no second error callback.
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
contract Coordinator is CoordinatorCore, ICoordinator {
    /// @notice What this contract is and its version, as "InferaCoordinator <semver>": a node checks it at start,
    /// so a wrong `coordinator_address` (no code, the NodeRegistry, another contract) is refused, not served.
    string public constant typeAndVersion = "InferaCoordinator 0.1.0";

    /// @notice The ConsensusModule this Coordinator deployed: it serves consensus requests (`IConsensus`) through
    /// this contract's `fallback`, by DELEGATECALL, in this contract's storage and escrow. A consensus request names it
    /// as its `verifier` in `RequestCreated`.
    address public immutable consensusModule;

    /// @notice Deploys the ConsensusModule on `registry_` (its address: `consensusModule`).
    constructor(address owner_, INodeRegistry registry_) CoordinatorCore(owner_, registry_) {
        consensusModule = address(new ConsensusModule(registry_));
    }

    /// @notice Refuses plain ETH (`WrongPayment(msg.value, 0)`): escrow comes only with a request or a `deposit`.
    receive() external payable {
        revert WrongPayment(msg.value, 0);
    }

    /// @notice Any call this contract does not implement goes to the ConsensusModule by DELEGATECALL (the consensus
    /// functions of `IConsensus`): it runs here, on this contract's storage, with this `msg.sender` and `msg.value`;
    /// its return data or revert data is passed back unchanged. A selector the module lacks reverts without data.
    fallback() external payable {
        address module = consensusModule;
        assembly {
            calldatacopy(0, 0, calldatasize())
            let ok := delegatecall(gas(), module, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            if iszero(ok) { revert(0, returndatasize()) }
            return(0, returndatasize())
        }
    }

    // -------------------------------------------------------------------------------------------- requests

    /// @inheritdoc ICoordinator
    function requestInference(RequestParams calldata params, bytes calldata input)
        external
        payable
        returns (uint256 requestId)
    {
        return _request(params, input, address(0));
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
            input,
            address(0)
        );
    }

    /// @notice Like the full `requestInference`, but every delivery must pass `verifier` (approved in the registry)
    /// before the node is paid and the consumer called back. `RequestCreated` names the verifier; the model id and
    /// keccak256 of the input are stored for it (`verificationOf`).
    function requestVerifiedInference(RequestParams calldata params, bytes calldata input, address verifier)
        external
        payable
        returns (uint256 requestId)
    {
        if (!registry.isApprovedVerifier(verifier)) revert VerifierNotApproved(verifier);
        requestId = _request(params, input, verifier);
        // A new id: the record is all zeros, so only the non-zero fields are written.
        Verification storage v = _verifications[requestId];
        v.verifier = verifier;
        v.modelId = params.modelId;
        v.inputHash = keccak256(input);
    }

    /// @notice After the deadline, closes the request (`Reclaimed`), credits the consumer's balance with the escrow of
    /// every slot nobody served, and, when at least one slot went unserved, calls the consumer's error callback
    /// `rawFail(requestId, "deadline: <unserved> of <redundancy> unserved")` exactly once, with
    /// `min(callbackGasLimit, MAX_ERROR_CALLBACK_GAS)` gas as a failure report's callback gets. Outputs still awaiting
    /// an optimistic verdict keep their escrow: settled, they pay their node; rejected, they are refunded then (with
    /// the error callback, if this reclaim made none). A consensus request still open has no quorum: all its slots
    /// are refunded, with `rawFail(requestId, "deadline: no quorum (<reveals> of <redundancy> revealed, <quorum>
    /// needed)")`.
    /// @dev Anyone may call it. The node that saw the request calls it as part of its service once the deadline
    /// passed; the consumer (or anyone for it) may too. There is no bounty: the caller pays about one callback's gas,
    /// the consumer gets its refund and its answer, and a bounty paid from the escrow would make the node that let a
    /// request expire earn from it. Reverts with `DeadlineNotPassed` at or before the deadline, `RequestClosed` once
    /// closed (so no second error callback can follow a failure or a reclaim).
    function reclaim(uint256 requestId) external returns (uint256 refund) {
        Request storage r = _requests[requestId];
        Status status = r.status;
        if (status == Status.None) revert UnknownRequest(requestId);
        if (status != Status.Open) revert RequestClosed(requestId, status);
        if (block.timestamp <= r.deadline) revert DeadlineNotPassed(requestId, r.deadline);
        r.status = Status.Reclaimed;
        uint256 unserved = _unusedSlots(requestId, r);
        refund = unserved * r.feePerNode;
        address consumer = r.consumer;
        balanceOf[r.token][consumer] += refund;
        bool callbackOk;
        if (unserved != 0) {
            Verification storage v = _verifications[requestId];
            bytes memory reason = v.verifier == consensusModule
                ? abi.encodePacked(
                    "deadline: no quorum (",
                    _decimal(v.reveals),
                    " of ",
                    _decimal(r.redundancy),
                    " revealed, ",
                    _decimal(v.quorum),
                    " needed)"
                )
                : abi.encodePacked(
                    "deadline: ", _decimal(unserved), " of ", _decimal(r.redundancy), " unserved"
                );
            callbackOk = _errorCallback(r, requestId, string(reason));
        } else if (_verifications[requestId].pending != 0) {
            _verifications[requestId].errorCallbackOwed = true;
        }
        emit Reclaimed(requestId, consumer, unserved, refund, callbackOk);
    }

    /// @notice Withdraws `requestId` and credits its whole escrow (`redundancy * feePerNode`) to the consumer's balance
    /// (take it with `withdraw`). Only the request's consumer may cancel, and only while the request is `Open` and no
    /// node acted on it: no delivery, no failure report, no output awaiting a verdict (a rejected output does not
    /// count). The status becomes `Cancelled`.
    /// @dev No callback follows a cancel: the consumer itself asked, in this very call, so it already knows. Reverts
    /// with `NotConsumer`, `RequestClosed` or `NodesAlreadyActed`.
    function cancelRequest(uint256 requestId) external returns (uint256 refund) {
        Request storage r = _requests[requestId];
        Status status = r.status;
        if (status == Status.None) revert UnknownRequest(requestId);
        if (msg.sender != r.consumer) revert NotConsumer(requestId, msg.sender);
        if (status != Status.Open) revert RequestClosed(requestId, status);
        Verification storage v = _verifications[requestId];
        // A consensus request's commits count as acts: a node has worked on it.
        uint256 pending = uint256(v.pending) + v.commits;
        if (r.delivered != 0 || r.failures != 0 || pending != 0) {
            revert NodesAlreadyActed(requestId, r.delivered, r.failures, pending);
        }
        r.status = Status.Cancelled;
        refund = uint256(r.redundancy) * r.feePerNode;
        balanceOf[r.token][msg.sender] += refund;
        emit RequestCancelled(requestId, refund);
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
        _useDelegation(req, input, signature);

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
            req.consumer,
            address(0)
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
        Verification storage v = _verifications[requestId];
        address verifier = v.verifier;
        if (verifier == address(0)) revert NoVerifier(requestId);
        if (verifier == consensusModule) revert ConsensusRequired(requestId);
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

    /// @notice The optimistic verifier's verdict on `node`'s output, within its window. A rejection reopens the slot
    /// of an open request; on a closed one it refunds the slot to the consumer, and on a reclaimed one whose reclaim
    /// found nothing unserved it makes the error callback that reclaim owed (`Reclaimed` with `unserved` 1).
    function resolveVerification(uint256 requestId, address node, bool valid) external {
        Verification storage v = _verifications[requestId];
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
            Status status = r.status;
            // Once the request is closed (reclaimed or failed) nobody can take the slot again: refund it now, or
            // its escrow would stay here for good.
            if (status != Status.Open) balanceOf[r.token][r.consumer] += r.feePerNode;
            if (status == Status.Reclaimed) {
                bool callbackOk;
                if (v.errorCallbackOwed) {
                    v.errorCallbackOwed = false;
                    callbackOk = _errorCallback(r, requestId, "deadline: late output rejected");
                }
                emit Reclaimed(requestId, r.consumer, 1, r.feePerNode, callbackOk);
            }
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
        _verifications[requestId].pending -= 1;
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

    /// @inheritdoc ICoordinator
    function verificationOf(uint256 requestId)
        external
        view
        returns (address verifier, bytes32 modelId, bytes32 inputHash, uint16 pending)
    {
        Verification storage v = _verifications[requestId];
        // A consensus request never awaits a verdict: its `pending` field points at an agreeing revealer.
        (verifier, pending) = (v.verifier, v.pending);
        if (verifier == consensusModule) pending = 0;
        (modelId, inputHash) = (v.modelId, v.inputHash);
    }

    /// @notice The state of many requests in one call, for a node catching up.
    function getRequests(uint256[] calldata requestIds) external view returns (RequestView[] memory views) {
        views = new RequestView[](requestIds.length);
        for (uint256 i; i < requestIds.length; ++i) {
            views[i] = getRequest(requestIds[i]);
        }
    }

    /// @notice How many failure reports close `requestId`: `max(redundancy, minFailureReports)`.
    function failureQuorum(uint256 requestId) public view returns (uint256) {
        uint256 redundancy = _requests[requestId].redundancy;
        return redundancy > minFailureReports ? redundancy : minFailureReports;
    }

    // ------------------------------------------------------------------------------------------ internal

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
        address verifier = _verifications[requestId].verifier;
        if (verifier != address(0)) {
            if (verifier == consensusModule) revert ConsensusRequired(requestId);
            revert ProofRequired(requestId);
        }
        return _settleDelivery(requestId, _claimSlot(requestId, node, true), node, output);
    }

    /// @dev Counts a delivery, pays the node, and hands the output to the consumer.
    function _settleDelivery(uint256 requestId, Request storage r, address node, bytes calldata output)
        internal
        returns (bool callbackOk)
    {
        uint8 delivered = r.delivered + 1;
        r.delivered = delivered;
        if (delivered == r.redundancy && r.status == Status.Open) r.status = Status.Fulfilled;

        uint256 earned = r.feePerNode;
        if (earned != 0) {
            uint256 protocolCut = earned * r.protocolFeeBps / 10_000;
            address token = r.token;
            earned -= protocolCut;
            balanceOf[token][node] += earned;
            if (protocolCut != 0) balanceOf[token][protocolFeeRecipient] += protocolCut;
        }

        callbackOk = _callWithExactGas(
            r.callbackGasLimit,
            r.consumer,
            abi.encodeWithSignature("rawFulfill(uint256,address,bytes)", requestId, node, output)
        );
        emit RequestFulfilled(requestId, node, keccak256(output), callbackOk, earned);
    }

    function _reportFailure(uint256 requestId, address node, string memory reason) internal {
        Request storage r = _claimSlot(requestId, node, false);
        uint8 failures = r.failures + 1;
        r.failures = failures;
        emit FailureReported(requestId, node, reason);
        if (failures < failureQuorum(requestId)) return;

        r.status = Status.Failed;
        uint256 refund = _unusedSlots(requestId, r) * r.feePerNode;
        address consumer = r.consumer;
        balanceOf[r.token][consumer] += refund;
        bool callbackOk = _errorCallback(r, requestId, reason);
        emit RequestFailed(requestId, reason, refund, callbackOk);
    }

    /// @dev Slots whose escrow is still free: not delivered and not awaiting a verdict. A rejected output frees its
    /// slot again, for another node (the rejected node has acted and cannot retry).
    function _unusedSlots(uint256 requestId, Request storage r) internal view returns (uint256) {
        return uint256(r.redundancy) - r.delivered - _verifications[requestId].pending;
    }

    /// @dev `value` in decimal digits, for callback reasons.
    function _decimal(uint256 value) internal pure returns (bytes memory out) {
        uint256 digits = 1;
        for (uint256 v = value; v >= 10; v /= 10) {
            ++digits;
        }
        out = new bytes(digits);
        for (; digits != 0; value /= 10) {
            // casting to 'uint8' is safe because a decimal digit plus 48 is below 256
            // forge-lint: disable-next-line(unsafe-typecast)
            out[--digits] = bytes1(uint8(48 + value % 10));
        }
    }
}
