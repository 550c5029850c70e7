// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IEscrow} from "./IEscrow.sol";
import {IVerifier} from "./IVerifier.sol";

/// @title ICoordinator
/// @notice What a consumer contract and an Infera node need to know about the coordinator.
interface ICoordinator is IEscrow {
    /// @notice What a consumer asks for. `feePerNode` is paid to each of up to `redundancy` nodes; the whole
    /// `feePerNode * redundancy` is escrowed when the request is made, in ETH (`token` zero) or an ERC-20.
    struct RequestParams {
        bytes32 modelId;
        uint32 callbackGasLimit;
        uint16 redundancy;
        uint64 deadline;
        address token;
        uint256 feePerNode;
    }

    /// @notice One item of `deliverBatch`: an output to deliver, or (with `failed`) a failure reason.
    struct BatchItem {
        uint256 requestId;
        bool failed;
        bytes data;
    }

    /// @notice A request signed off-chain by the consumer's delegated signer (EIP-712), created and delivered by a node
    /// in one transaction. Paid from the consumer's balance on the coordinator (see `deposit`).
    struct DelegatedRequest {
        address consumer;
        bytes32 modelId;
        bytes32 inputHash;
        uint32 callbackGasLimit;
        uint16 redundancy;
        address token;
        uint256 feePerNode;
        uint256 nonce;
        uint64 expiry;
        uint64 deadline;
    }

    /// @notice A request's state, as the batch reader returns it.
    struct RequestView {
        address consumer;
        uint64 deadline;
        uint16 redundancy;
        uint16 delivered;
        uint16 failures;
        uint32 callbackGasLimit;
        uint16 protocolFeeBps;
        Status status;
        address token;
        uint256 feePerNode;
    }

    /// @notice Open: nodes may deliver. Fulfilled: `redundancy` deliveries made. Failed: enough failure reports.
    /// Reclaimed: the deadline passed and the escrow of slots nobody served went back to the consumer. Cancelled: the
    /// consumer withdrew the request before any node acted on it (appended last: the earlier values keep their numbers).
    enum Status {
        None,
        Open,
        Fulfilled,
        Failed,
        Reclaimed,
        Cancelled
    }

    /// @notice Thrown by owner-only functions when called by anyone else.
    error Unauthorized(address caller);
    /// @notice Thrown by `deliver`, `deliverWithProof`, `deliverDelegated`, `reportFailure` and `deliverBatch` if the
    /// caller is not an active staked node.
    error NodeNotActive(address node);
    /// @notice Thrown by requests if the callback gas limit is zero or above the protocol maximum.
    error InvalidCallbackGasLimit(uint32 callbackGasLimit, uint32 maxCallbackGasLimit);
    /// @notice Thrown by requests if the input is empty or longer than the protocol maximum.
    error InvalidInputLength(uint256 length, uint256 maxInputBytes);
    /// @notice Thrown by requests if redundancy is zero or above the protocol maximum.
    error InvalidRedundancy(uint16 redundancy, uint16 maxRedundancy);
    /// @notice Thrown by requests if the deadline is not in the future or too far in it.
    error InvalidDeadline(uint64 deadline, uint64 latestAllowed);
    /// @notice Thrown by requests if the fee per node is below the minimum fee.
    error FeeTooLow(uint256 feePerNode, uint256 minFee);
    /// @notice Thrown if no request has this id.
    error UnknownRequest(uint256 requestId);
    /// @notice Thrown by `deliver`, `reportFailure`, `reclaim` and `cancelRequest` if the request is no longer open.
    error RequestClosed(uint256 requestId, Status status);
    /// @notice Thrown by `deliver` and `reportFailure` if this node already delivered or reported for the request.
    error AlreadyServed(uint256 requestId, address node);
    /// @notice Thrown by `deliver` and `reportFailure` after the request's deadline.
    error DeadlinePassed(uint256 requestId, uint64 deadline);
    /// @notice Thrown by `reclaim` before the request's deadline.
    error DeadlineNotPassed(uint256 requestId, uint64 deadline);
    /// @notice Thrown by `deliver` if the output is longer than the protocol maximum.
    error OutputTooLarge(uint256 length, uint256 maxOutputBytes);
    /// @notice Thrown by `setProtocolFee` above the 10% cap.
    error ProtocolFeeTooHigh(uint16 bps, uint16 maxBps);
    /// @notice Thrown by `setLimits` for a zero limit.
    error InvalidLimit();
    /// @notice Thrown by `setLimits` if a limit is above its cap (`value` > `max`): `minFee` 2^80 - 1 wei,
    /// `maxCallbackGasLimit` 2^24 - 1 gas, `maxRedundancy` and `minFailureReports` 255, `maxDeadlineWindow` 365 days.
    error LimitOutOfRange(uint256 value, uint256 max);
    /// @notice Thrown by requests if the fee per node is above 2^80 - 1 (wei or token units): it would not fit the
    /// request's record.
    error FeeTooHigh(uint256 feePerNode, uint256 maxFee);
    /// @notice Thrown by `cancelRequest` when called by anyone but the request's consumer.
    error NotConsumer(uint256 requestId, address caller);
    /// @notice Thrown by `cancelRequest` once a node delivered, reported a failure, or awaits a verdict;
    /// `pendingVerdicts` also counts the commits of a consensus request (a commit is an act).
    error NodesAlreadyActed(uint256 requestId, uint256 delivered, uint256 failures, uint256 pendingVerdicts);
    /// @notice Thrown by `requestVerifiedInference` if the NodeRegistry's owner has not approved the verifier.
    error VerifierNotApproved(address verifier);
    /// @notice Thrown by `deliver` on a request that asked for verification: use `deliverWithProof`.
    error ProofRequired(uint256 requestId);
    /// @notice Thrown by `deliver`, `deliverBatch` items and `deliverWithProof` on a consensus request (one made with
    /// `IConsensus.requestConsensusInference`): its nodes `commit` and `reveal` instead.
    error ConsensusRequired(uint256 requestId);
    /// @notice Thrown by `deliverWithProof` on a request that did not ask for verification: use `deliver`.
    error NoVerifier(uint256 requestId);
    /// @notice Thrown by `deliverWithProof` if the verifier reverted: the delivery is not counted.
    error VerifierFailed(uint256 requestId, address verifier);
    /// @notice Thrown by `resolveVerification` when called by anyone but the request's verifier.
    error NotTheVerifier(uint256 requestId, address caller);
    /// @notice Thrown by `resolveVerification` and `finalizeDelivery` if no delivery of that node awaits a verdict.
    error NothingPending(uint256 requestId, address node);
    /// @notice Thrown by `resolveVerification` after the verifier's window closed (the result then stands).
    error VerdictTooLate(uint256 requestId, uint64 verdictBy);
    /// @notice Thrown by `finalizeDelivery` before a verdict and before the verifier's window closed.
    error VerificationNotDone(uint256 requestId, uint64 verdictBy);
    /// @notice Thrown by `deliverWithProof` when every slot is delivered or awaiting a verdict.
    error NoSlotLeft(uint256 requestId);
    /// @notice Thrown by `deliverDelegated` after the signed request's expiry.
    error DelegationExpired(uint64 expiry);
    /// @notice Thrown by `deliverDelegated` if the consumer's nonce was already used (a replay).
    error NonceUsed(address consumer, uint256 nonce);
    /// @notice Thrown by `deliverDelegated` if the signature is not the consumer's current delegated signer's.
    error InvalidSignature();
    /// @notice Thrown by `deliverDelegated` if the input is not the one the signer signed (`inputHash`).
    error InputMismatch(bytes32 signed, bytes32 given);
    /// @notice Thrown by `deliverDelegated` if the consumer's balance cannot cover the escrow.
    error InsufficientBalance(address account, address token, uint256 needed, uint256 available);
    /// @notice Thrown by `finalizeDelivery` if the output is not the one that was verified.
    error OutputMismatch(uint256 requestId, bytes32 expected, bytes32 given);

    /// @notice A consumer asked for inference. Carries everything a node needs to serve it without a read: `deadline`
    /// in seconds since the epoch, `feePerNode` in wei or token units; `verifier` is zero for a plain request, else
    /// every delivery needs a proof for that verifier (`deliverWithProof`).
    event RequestCreated(
        uint256 indexed requestId,
        bytes32 indexed modelId,
        address indexed consumer,
        bytes input,
        address token,
        uint256 feePerNode,
        uint32 callbackGasLimit,
        uint16 redundancy,
        uint64 deadline,
        address verifier
    );
    /// @notice A node delivered. `callbackOk` is false if the consumer's callback reverted or ran out of its gas;
    /// the node is paid either way: `fee` (in the request's token) is what was credited to it, the protocol's cut
    /// taken.
    event RequestFulfilled(
        uint256 indexed requestId, address indexed node, bytes32 outputHash, bool callbackOk, uint256 fee
    );
    /// @notice A node reported that it cannot serve the request; other nodes may still deliver.
    event FailureReported(uint256 indexed requestId, address indexed node, string reason);
    /// @notice Enough nodes reported failure: the request is closed, its unused escrow refunded to the consumer.
    event RequestFailed(uint256 indexed requestId, string reason, uint256 refund, bool callbackOk);
    /// @notice The deadline passed: the request is closed, the escrow of its `unserved` slots (`refund`, wei or token
    /// units) credited to the consumer, and, when `unserved` > 0, the consumer's error callback called once
    /// (`callbackOk` its outcome; false when there was no callback).
    event Reclaimed(
        uint256 indexed requestId, address indexed consumer, uint256 unserved, uint256 refund, bool callbackOk
    );
    /// @notice The consumer cancelled the request before any node acted; its whole escrow (`refund`) was credited to
    /// the consumer's balance. No callback follows a cancel.
    event RequestCancelled(uint256 indexed requestId, uint256 refund);
    /// @notice An item of `deliverBatch` was skipped, with the selector of the error it would have raised.
    event DeliverySkipped(uint256 indexed requestId, address indexed node, bytes4 errorSelector);
    /// @notice The owner changed the protocol fee for requests made from now on.
    event ProtocolFeeChanged(uint16 bps, address recipient);
    /// @notice The owner changed the protocol limits.
    event LimitsChanged(
        uint256 minFee,
        uint32 maxCallbackGasLimit,
        uint32 maxInputBytes,
        uint32 maxOutputBytes,
        uint16 maxRedundancy,
        uint16 minFailureReports,
        uint64 maxDeadlineWindow
    );
    /// @notice An optimistic verifier is checking `node`'s output; it stands if no verdict comes by `verdictBy`.
    event VerificationPending(
        uint256 indexed requestId, address indexed node, bytes32 outputHash, uint64 verdictBy
    );
    /// @notice A verifier found `node`'s output invalid: it is never handed over or paid, and its slot is open again
    /// for another node.
    event DeliveryRejected(uint256 indexed requestId, address indexed node);
    /// @notice A node created `requestId` from `consumer`'s signed request `nonce`.
    event DelegatedRequestCreated(uint256 indexed requestId, address indexed consumer, uint256 nonce);
    /// @notice Ownership moved to a new address.
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    /// @notice Asks for inference with full control of redundancy, deadline and payment.
    function requestInference(RequestParams calldata params, bytes calldata input)
        external
        payable
        returns (uint256 requestId);

    /// @notice Asks one node for inference, paid in ETH (`msg.value`), with the default deadline.
    function requestInference(bytes32 modelId, bytes calldata input, uint32 callbackGasLimit)
        external
        payable
        returns (uint256 requestId);

    /// @notice Like the full `requestInference`, but every delivery must pass `verifier` first.
    function requestVerifiedInference(RequestParams calldata params, bytes calldata input, address verifier)
        external
        payable
        returns (uint256 requestId);

    /// @notice Delivers `output` with `proof` for a request that named a verifier.
    function deliverWithProof(uint256 requestId, bytes calldata output, bytes calldata proof)
        external
        returns (IVerifier.Verdict verdict);

    /// @notice The optimistic verifier's verdict on `node`'s output, within its window.
    function resolveVerification(uint256 requestId, address node, bool valid) external;

    /// @notice Settles `node`'s verified (or unchallenged) output; anyone may call it with the delivered bytes.
    function finalizeDelivery(uint256 requestId, address node, bytes calldata output)
        external
        returns (bool callbackOk);

    /// @notice Creates a request signed by the consumer's delegated signer and delivers `output` for it.
    function deliverDelegated(
        DelegatedRequest calldata req,
        bytes calldata input,
        bytes calldata signature,
        bytes calldata output
    ) external returns (uint256 requestId);

    /// @notice Delivers `output` for `requestId`; called by an active node.
    function deliver(uint256 requestId, bytes calldata output) external returns (bool callbackOk);

    /// @notice Reports that the calling node cannot serve `requestId`.
    function reportFailure(uint256 requestId, string calldata reason) external;

    /// @notice Settles many deliveries and failure reports in one transaction; bad items are skipped.
    function deliverBatch(BatchItem[] calldata items) external returns (uint256 settled);

    /// @notice After the deadline, closes `requestId`, credits the consumer with the escrow of slots nobody served and,
    /// if any slot went unserved, calls the consumer's error callback once. Anyone may call it.
    function reclaim(uint256 requestId) external returns (uint256 refund);

    /// @notice Withdraws `requestId` before any node acted on it; only its consumer. The whole escrow is credited to
    /// the consumer's balance; no callback follows.
    function cancelRequest(uint256 requestId) external returns (uint256 refund);

    /// @notice The state of one request.
    function getRequest(uint256 requestId) external view returns (RequestView memory);

    /// @notice What a verifier needs of a verified request: its `verifier` (zero for a plain request), `modelId`,
    /// `inputHash` (keccak256 of the input) and how many deliveries await a verdict (`pending`; always 0 for a
    /// consensus request).
    function verificationOf(uint256 requestId)
        external
        view
        returns (address verifier, bytes32 modelId, bytes32 inputHash, uint16 pending);
}
