// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./utils/CoordinatorBase.sol";
import {MockERC20, NoBoolToken, FeeOnTransferToken, FalseToken} from "./utils/Tokens.sol";
import {Coordinator} from "../src/Coordinator.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {IEscrow} from "../src/interfaces/IEscrow.sol";

contract CoordinatorOwnerTest is CoordinatorTest {
    function testCanSetProtocolFee() public {
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.ProtocolFeeChanged(250, stranger);
        vm.prank(owner);
        coordinator.setProtocolFee(250, stranger);
        assertEq(coordinator.protocolFeeBps(), 250, "bps");
        assertEq(coordinator.protocolFeeRecipient(), stranger, "recipient");
    }

    function testFuzzCannotSetProtocolFeeAboveTenPercent(uint16 bps) public {
        bps = uint16(bound(bps, 1_001, type(uint16).max));
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.ProtocolFeeTooHigh.selector, bps, 1_000));
        vm.prank(owner);
        coordinator.setProtocolFee(bps, owner);
    }

    function testCannotSetProtocolFeeAsStranger() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.Unauthorized.selector, stranger));
        vm.prank(stranger);
        coordinator.setProtocolFee(1, stranger);
    }

    function testCannotSendProtocolFeesToZero() public {
        vm.expectRevert(ICoordinator.InvalidLimit.selector);
        vm.prank(owner);
        coordinator.setProtocolFee(1, address(0));
    }

    function testCanSetLimits() public {
        vm.prank(owner);
        coordinator.setLimits(1 gwei, 500_000, 100, 200, 5, 3, 7 days);
        assertEq(coordinator.minFee(), 1 gwei, "minFee");
        assertEq(coordinator.maxCallbackGasLimit(), 500_000, "gas");
        assertEq(coordinator.maxRedundancy(), 5, "redundancy");
        assertEq(coordinator.minFailureReports(), 3, "quorum");
        assertEq(coordinator.maxDeadlineWindow(), 7 days, "window");
    }

    function testFuzzCannotSetAZeroLimit(uint8 which) public {
        uint32[4] memory small = [uint32(500_000), 100, 200, 5];
        small[which % 4] = 0;
        vm.expectRevert(ICoordinator.InvalidLimit.selector);
        vm.prank(owner);
        coordinator.setLimits(0, small[0], small[1], small[2], uint16(small[3]), 2, 7 days);
    }

    function testCannotSetLimitsAsStranger() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.Unauthorized.selector, stranger));
        vm.prank(stranger);
        coordinator.setLimits(0, 1, 1, 1, 1, 1, 1 days);
    }

    function testCanTransferOwnership() public {
        vm.prank(owner);
        coordinator.transferOwnership(stranger);
        assertEq(coordinator.owner(), stranger, "owner");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.Unauthorized.selector, owner));
        vm.prank(owner);
        coordinator.setProtocolFee(1, owner);
    }

    function testCannotTransferOwnershipAsStranger() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.Unauthorized.selector, stranger));
        vm.prank(stranger);
        coordinator.transferOwnership(stranger);
    }
}

contract CoordinatorRequestTest is CoordinatorTest {
    function testCanRequest() public {
        bytes memory input = abi.encode("hello");
        uint64 deadline = uint64(block.timestamp + 1 hours);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.RequestCreated(
            1, MODEL, address(consumer), input, address(0), FEE, GAS_LIMIT, 1, deadline, address(0)
        );
        uint256 id = _request(input, GAS_LIMIT, FEE);

        assertEq(id, 1, "first id");
        assertEq(address(coordinator).balance, FEE, "fee escrowed");
        ICoordinator.RequestView memory r = coordinator.getRequest(id);
        assertEq(r.consumer, address(consumer), "consumer");
        assertEq(r.callbackGasLimit, GAS_LIMIT, "gas limit");
        assertEq(r.feePerNode, FEE, "fee");
        assertEq(r.redundancy, 1, "redundancy");
        assertEq(r.deadline, deadline, "deadline");
        assertTrue(r.status == ICoordinator.Status.Open, "open");
    }

    function testFuzzCanRequest(bytes memory input, uint256 gasLimit, uint256 fee, uint16 redundancy) public {
        if (input.length == 0 || input.length > coordinator.maxInputBytes()) input = hex"00";
        gasLimit = bound(gasLimit, 1, coordinator.maxCallbackGasLimit());
        fee = bound(fee, 0, 1_000 ether);
        redundancy = uint16(bound(redundancy, 1, coordinator.maxRedundancy()));
        ICoordinator.RequestParams memory p = _params(redundancy, fee, address(0));
        // forge-lint: disable-next-line(unsafe-typecast)
        p.callbackGasLimit = uint32(gasLimit); // bounded to the uint32 maximum above
        uint256 id = consumer.requestWith{value: fee * redundancy}(p, input);
        ICoordinator.RequestView memory r = coordinator.getRequest(id);
        assertEq(r.callbackGasLimit, gasLimit, "gas limit");
        assertEq(r.feePerNode, fee, "fee");
        assertEq(r.redundancy, redundancy, "redundancy");
        assertEq(address(coordinator).balance, fee * redundancy, "escrow");
    }

    function testRequestIdsIncrease() public {
        uint256 a = _request(hex"01", GAS_LIMIT, FEE);
        uint256 b = _request(hex"02", GAS_LIMIT, FEE);
        assertEq(b, a + 1, "sequential ids");
    }

    function testCannotRequestWithZeroGasLimit() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.InvalidCallbackGasLimit.selector, 0, 2_000_000));
        _request(hex"01", 0, FEE);
    }

    function testFuzzCannotRequestAboveMaxGasLimit(uint256 gasLimit) public {
        gasLimit = bound(gasLimit, uint256(coordinator.maxCallbackGasLimit()) + 1, type(uint32).max);
        vm.expectRevert(
            abi.encodeWithSelector(ICoordinator.InvalidCallbackGasLimit.selector, gasLimit, 2_000_000)
        );
        // forge-lint: disable-next-line(unsafe-typecast)
        _request(hex"01", uint32(gasLimit), FEE); // bounded to the uint32 maximum above
    }

    function testCannotRequestEmptyInput() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.InvalidInputLength.selector, 0, 16 * 1024));
        _request("", GAS_LIMIT, FEE);
    }

    function testFuzzCannotRequestOversizedInput(uint256 length) public {
        length = bound(length, uint256(coordinator.maxInputBytes()) + 1, 40_000);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.InvalidInputLength.selector, length, 16 * 1024));
        _request(new bytes(length), GAS_LIMIT, FEE);
    }

    function testFuzzCannotRequestBadRedundancy(uint16 redundancy) public {
        if (redundancy != 0) {
            redundancy = uint16(bound(redundancy, uint256(coordinator.maxRedundancy()) + 1, 65535));
        }
        ICoordinator.RequestParams memory p = _params(redundancy, FEE, address(0));
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.InvalidRedundancy.selector, redundancy, 16));
        consumer.requestWith{value: FEE * redundancy}(p, hex"01");
    }

    function testFuzzCannotRequestADeadlineInThePast(uint64 deadline) public {
        vm.warp(1_000_000);
        deadline = uint64(bound(deadline, 0, block.timestamp));
        ICoordinator.RequestParams memory p = _params(1, FEE, address(0));
        p.deadline = deadline;
        uint64 latest = uint64(block.timestamp) + 30 days;
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.InvalidDeadline.selector, deadline, latest));
        consumer.requestWith{value: FEE}(p, hex"01");
    }

    function testFuzzCannotRequestADeadlineTooFar(uint64 deadline) public {
        uint64 latest = uint64(block.timestamp) + 30 days;
        deadline = uint64(bound(deadline, uint256(latest) + 1, type(uint64).max));
        ICoordinator.RequestParams memory p = _params(1, FEE, address(0));
        p.deadline = deadline;
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.InvalidDeadline.selector, deadline, latest));
        consumer.requestWith{value: FEE}(p, hex"01");
    }

    function testFuzzCannotRequestBelowMinFee(uint256 fee) public {
        vm.prank(owner);
        coordinator.setLimits(1 ether, 2_000_000, 16 * 1024, 16 * 1024, 16, 2, 30 days);
        fee = bound(fee, 0, 1 ether - 1);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.FeeTooLow.selector, fee, 1 ether));
        _request(hex"01", GAS_LIMIT, fee);
    }

    function testFuzzCannotUnderpayRedundantRequest(uint256 sent) public {
        sent = bound(sent, 0, 3 * FEE - 1);
        ICoordinator.RequestParams memory p = _params(3, FEE, address(0));
        vm.expectRevert(abi.encodeWithSelector(IEscrow.WrongPayment.selector, sent, 3 * FEE));
        coordinator.requestInference{value: sent}(p, hex"01");
    }

    function testCannotSendEthWithATokenRequest() public {
        MockERC20 token = new MockERC20();
        ICoordinator.RequestParams memory p = _params(1, FEE, address(token));
        vm.expectRevert(abi.encodeWithSelector(IEscrow.WrongPayment.selector, 1, 0));
        coordinator.requestInference{value: 1}(p, hex"01");
    }

    function testFuzzCanRequestInAToken(uint256 fee, uint16 redundancy) public {
        fee = bound(fee, 1, type(uint80).max);
        redundancy = uint16(bound(redundancy, 1, 16));
        MockERC20 token = new MockERC20();
        token.mint(address(consumer), fee * redundancy);
        consumer.approve(address(token), fee * redundancy);
        uint256 id = consumer.requestWith(_params(redundancy, fee, address(token)), hex"01");
        assertEq(token.balanceOf(address(coordinator)), fee * redundancy, "escrowed in the token");
        assertEq(coordinator.getRequest(id).token, address(token), "token recorded");
    }

    function testCanRequestInATokenThatReturnsNoBool() public {
        NoBoolToken token = new NoBoolToken();
        token.mint(address(consumer), FEE);
        consumer.approve(address(token), FEE);
        consumer.requestWith(_params(1, FEE, address(token)), hex"01");
        assertEq(token.balanceOf(address(coordinator)), FEE, "escrowed");
    }

    function testCannotRequestInAFeeOnTransferToken() public {
        FeeOnTransferToken token = new FeeOnTransferToken();
        token.mint(address(consumer), FEE);
        consumer.approve(address(token), FEE);
        vm.expectRevert(abi.encodeWithSelector(IEscrow.UnsupportedToken.selector, address(token)));
        consumer.requestWith(_params(1, FEE, address(token)), hex"01");
    }

    function testCannotRequestInATokenThatReturnsFalse() public {
        FalseToken token = new FalseToken();
        token.mint(address(consumer), FEE);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.TransferFailed.selector, address(token), address(consumer), FEE)
        );
        consumer.requestWith(_params(1, FEE, address(token)), hex"01");
    }

    function testCannotRequestInATokenWithoutCode() public {
        vm.expectRevert(abi.encodeWithSelector(IEscrow.UnsupportedToken.selector, address(0x1234)));
        consumer.requestWith(_params(1, FEE, address(0x1234)), hex"01");
    }

    function testCannotRequestWithoutAllowance() public {
        MockERC20 token = new MockERC20();
        token.mint(address(consumer), FEE);
        vm.expectRevert(
            abi.encodeWithSelector(IEscrow.TransferFailed.selector, address(token), address(consumer), FEE)
        );
        consumer.requestWith(_params(1, FEE, address(token)), hex"01");
    }
}
