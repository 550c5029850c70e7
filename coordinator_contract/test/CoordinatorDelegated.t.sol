// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./utils/CoordinatorBase.sol";
import {Coordinator} from "../src/Coordinator.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {IEscrow} from "../src/interfaces/IEscrow.sol";

contract CoordinatorDelegatedTest is CoordinatorTest {
    uint256 internal constant SIGNER_KEY = 0xA11CE5;
    address internal signer;
    bytes internal constant INPUT = hex"0102";
    bytes internal constant OUTPUT = hex"c0ffee";

    function setUp() public override {
        super.setUp();
        signer = vm.addr(SIGNER_KEY);
        consumer.setSigner(signer);
        payable(address(consumer)).transfer(1 ether);
        consumer.fund(1 ether);
    }

    function _req(uint256 nonce) internal view returns (ICoordinator.DelegatedRequest memory) {
        return ICoordinator.DelegatedRequest({
            consumer: address(consumer),
            modelId: MODEL,
            inputHash: keccak256(INPUT),
            callbackGasLimit: GAS_LIMIT,
            redundancy: 1,
            token: address(0),
            feePerNode: FEE,
            nonce: nonce,
            expiry: uint64(block.timestamp + 10 minutes),
            deadline: uint64(block.timestamp + 1 hours)
        });
    }

    function _sign(Coordinator c, ICoordinator.DelegatedRequest memory req, uint256 key)
        internal
        view
        returns (bytes memory)
    {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, this.digestOf(c, req));
        return abi.encodePacked(r, s, v);
    }

    /// @dev External so the memory struct is passed to the coordinator's calldata-taking view.
    function digestOf(Coordinator c, ICoordinator.DelegatedRequest calldata req)
        external
        view
        returns (bytes32)
    {
        return c.delegatedRequestDigest(req);
    }

    /// The EIP-712 type is the struct's own name and fields, as wallets and the node (node/api/eip712.py) build it:
    /// a qualified name (`ICoordinator.DelegatedRequest`) would make every signature made off-chain invalid.
    function testTheTypeHashIsTheEip712TypeOfTheStruct() public view {
        assertEq(
            coordinator.DELEGATED_REQUEST_TYPEHASH(),
            keccak256(
                "DelegatedRequest(address consumer,bytes32 modelId,bytes32 inputHash,uint32 callbackGasLimit,"
                "uint16 redundancy,address token,uint256 feePerNode,uint256 nonce,uint64 expiry,uint64 deadline)"
            ),
            "the EIP-712 type of DelegatedRequest"
        );
    }

    function testFuzzCanCreateAndDeliverInOneTransaction(uint256 nonce) public {
        ICoordinator.DelegatedRequest memory req = _req(nonce);
        bytes memory sig = _sign(coordinator, req, SIGNER_KEY);
        uint256 expectedId = coordinator.nextRequestId();
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.DelegatedRequestCreated(expectedId, address(consumer), nonce);
        vm.prank(node);
        uint256 id = coordinator.deliverDelegated(req, INPUT, sig, OUTPUT);
        assertEq(id, expectedId, "id");
        assertEq(consumer.lastOutput(), OUTPUT, "consumer got the result");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "node paid");
        assertEq(
            coordinator.balanceOf(address(0), address(consumer)), 1 ether - FEE, "escrow from the balance"
        );
        assertTrue(coordinator.nonceUsed(address(consumer), nonce), "nonce spent");
    }

    function testCannotReplayASignedRequest() public {
        ICoordinator.DelegatedRequest memory req = _req(7);
        bytes memory sig = _sign(coordinator, req, SIGNER_KEY);
        vm.prank(node);
        coordinator.deliverDelegated(req, INPUT, sig, OUTPUT);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NonceUsed.selector, address(consumer), 7));
        vm.prank(node2);
        coordinator.deliverDelegated(req, INPUT, sig, OUTPUT);
    }

    function testFuzzCannotReplayOnAnotherChain(uint64 otherChain) public {
        otherChain = uint64(bound(otherChain, 1, type(uint64).max));
        if (otherChain == block.chainid) otherChain += 1;
        ICoordinator.DelegatedRequest memory req = _req(1);
        bytes memory sig = _sign(coordinator, req, SIGNER_KEY);
        vm.chainId(otherChain);
        vm.expectRevert(ICoordinator.InvalidSignature.selector);
        vm.prank(node);
        coordinator.deliverDelegated(req, INPUT, sig, OUTPUT);
    }

    function testCannotReplayOnAnotherCoordinator() public {
        Coordinator other = new Coordinator(owner, registry);
        ICoordinator.DelegatedRequest memory req = _req(1);
        bytes memory sigForOther = _sign(other, req, SIGNER_KEY);
        vm.expectRevert(ICoordinator.InvalidSignature.selector);
        vm.prank(node);
        coordinator.deliverDelegated(req, INPUT, sigForOther, OUTPUT);
    }

    function testFuzzCannotUseAnotherKey(uint256 key) public {
        key = bound(key, 1, 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364140);
        if (key == SIGNER_KEY) key += 1;
        ICoordinator.DelegatedRequest memory req = _req(1);
        bytes memory sig = _sign(coordinator, req, key);
        vm.expectRevert(ICoordinator.InvalidSignature.selector);
        vm.prank(node);
        coordinator.deliverDelegated(req, INPUT, sig, OUTPUT);
    }

    function testRotatingTheSignerVoidsOldSignatures() public {
        ICoordinator.DelegatedRequest memory req = _req(1);
        bytes memory oldSig = _sign(coordinator, req, SIGNER_KEY);
        consumer.setSigner(vm.addr(0xB0B5));
        vm.expectRevert(ICoordinator.InvalidSignature.selector);
        vm.prank(node);
        coordinator.deliverDelegated(req, INPUT, oldSig, OUTPUT);
        bytes memory newSig = _sign(coordinator, req, 0xB0B5);
        vm.prank(node);
        coordinator.deliverDelegated(req, INPUT, newSig, OUTPUT);
    }

    function testCannotUseAMalleableSignature() public {
        ICoordinator.DelegatedRequest memory req = _req(1);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(SIGNER_KEY, this.digestOf(coordinator, req));
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        bytes memory flipped = abi.encodePacked(r, bytes32(n - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        vm.expectRevert(ICoordinator.InvalidSignature.selector);
        vm.prank(node);
        coordinator.deliverDelegated(req, INPUT, flipped, OUTPUT);
    }

    function testFuzzCannotSubmitAfterExpiry(uint256 late) public {
        ICoordinator.DelegatedRequest memory req = _req(1);
        bytes memory sig = _sign(coordinator, req, SIGNER_KEY);
        vm.warp(bound(late, uint256(req.expiry) + 1, uint256(req.expiry) + 365 days));
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.DelegationExpired.selector, req.expiry));
        vm.prank(node);
        coordinator.deliverDelegated(req, INPUT, sig, OUTPUT);
    }

    function testCannotSwapTheInput() public {
        ICoordinator.DelegatedRequest memory req = _req(1);
        bytes memory sig = _sign(coordinator, req, SIGNER_KEY);
        vm.expectRevert(
            abi.encodeWithSelector(
                ICoordinator.InputMismatch.selector, keccak256(INPUT), keccak256(hex"0666")
            )
        );
        vm.prank(node);
        coordinator.deliverDelegated(req, hex"0666", sig, OUTPUT);
    }

    function testCannotSpendMoreThanTheConsumerDeposited() public {
        ICoordinator.DelegatedRequest memory req = _req(1);
        req.feePerNode = 2 ether;
        bytes memory sig = _sign(coordinator, req, SIGNER_KEY);
        vm.expectRevert(
            abi.encodeWithSelector(
                ICoordinator.InsufficientBalance.selector, address(consumer), address(0), 2 ether, 1 ether
            )
        );
        vm.prank(node);
        coordinator.deliverDelegated(req, INPUT, sig, OUTPUT);
    }

    function testFuzzCannotSubmitAsUnstakedNode(address caller) public {
        if (registry.isActive(caller)) caller = stranger;
        ICoordinator.DelegatedRequest memory req = _req(1);
        bytes memory sig = _sign(coordinator, req, SIGNER_KEY);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeNotActive.selector, caller));
        vm.prank(caller);
        coordinator.deliverDelegated(req, INPUT, sig, OUTPUT);
    }

    function testConsumerWithoutSignerCannotBeDelegated() public {
        consumer.setSigner(address(0));
        ICoordinator.DelegatedRequest memory req = _req(1);
        bytes memory sig = _sign(coordinator, req, SIGNER_KEY);
        vm.expectRevert(ICoordinator.InvalidSignature.selector);
        vm.prank(node);
        coordinator.deliverDelegated(req, INPUT, sig, OUTPUT);
    }

    function testCannotDepositTheWrongAmount() public {
        vm.expectRevert(abi.encodeWithSelector(IEscrow.WrongPayment.selector, 1, 2));
        coordinator.deposit{value: 1}(address(0), address(consumer), 2);
    }

    function testRedundantDelegatedRequestIsServedByOthersToo() public {
        ICoordinator.DelegatedRequest memory req = _req(1);
        req.redundancy = 2;
        bytes memory sig = _sign(coordinator, req, SIGNER_KEY);
        vm.prank(node);
        uint256 id = coordinator.deliverDelegated(req, INPUT, sig, OUTPUT);
        vm.prank(node2);
        coordinator.deliver(id, OUTPUT);
        assertTrue(_status(id) == ICoordinator.Status.Fulfilled, "both delivered");
        assertEq(coordinator.balanceOf(address(0), node2), FEE, "second node paid");
    }
}
