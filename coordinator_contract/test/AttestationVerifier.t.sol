// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./utils/CoordinatorBase.sol";
import {AttestationVerifier} from "../src/verifiers/AttestationVerifier.sol";
import {VerifierBase} from "../src/verifiers/VerifierBase.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {IVerifier} from "../src/interfaces/IVerifier.sol";

contract AttestationVerifierTest is CoordinatorTest {
    uint256 internal constant ATTESTER_KEY = 0xA77E57;
    uint256 internal constant SLASH = 0.5 ether;
    bytes32 internal constant DIGEST = keccak256("minilm-sentiment weights");
    bytes internal constant INPUT = hex"1234";
    bytes internal constant OUTPUT = hex"c0ffee";
    AttestationVerifier internal verifier;
    address internal attester;

    function setUp() public override {
        super.setUp();
        attester = vm.addr(ATTESTER_KEY);
        verifier = new AttestationVerifier(owner, coordinator, registry, SLASH);
        vm.startPrank(owner);
        registry.setVerifier(address(verifier), true);
        verifier.setAttester(attester, MODEL, DIGEST, true);
        vm.stopPrank();
    }

    function _verified() internal returns (uint256) {
        return consumer.requestVerified{value: FEE}(_params(1, FEE, address(0)), INPUT, address(verifier));
    }

    /// @dev The digest computed here, independently of the verifier, as the README specifies it.
    function _digest(uint256 id, address who, bytes memory output, bytes32 modelDigest)
        internal
        view
        returns (bytes32)
    {
        bytes32 inner = keccak256(
            abi.encode(
                keccak256("InferaAttestation.v1"),
                block.chainid,
                address(coordinator),
                id,
                who,
                keccak256(INPUT),
                keccak256(output),
                modelDigest
            )
        );
        return keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", inner));
    }

    function _proof(uint256 key, uint256 id, address who, bytes memory output, bytes32 modelDigest)
        internal
        view
        returns (bytes memory)
    {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, _digest(id, who, output, modelDigest));
        return abi.encode(modelDigest, abi.encodePacked(r, s, v));
    }

    function _deliver(address who, uint256 id, bytes memory proof) internal returns (IVerifier.Verdict) {
        vm.prank(who);
        return coordinator.deliverWithProof(id, OUTPUT, proof);
    }

    function _assertRejectedAndSlashed(uint256 id, address who, IVerifier.Verdict verdict) internal view {
        assertTrue(verdict == IVerifier.Verdict.Invalid, "invalid");
        assertEq(consumer.calls(), 0, "never handed over");
        assertEq(registry.stakeOf(who), MIN_STAKE - SLASH, "slashed");
        assertEq(registry.slashedBalanceOf(address(consumer)), SLASH, "to the consumer");
        assertEq(coordinator.getRequest(id).delivered, 0, "the slot is open again");
    }

    function testFuzzAnAttestedOutputIsValidPaidAndHandedOver(bytes memory output) public {
        if (output.length > 1024) output = abi.encode(keccak256(output));
        uint256 id = _verified();
        vm.prank(node);
        IVerifier.Verdict verdict =
            coordinator.deliverWithProof(id, output, _proof(ATTESTER_KEY, id, node, output, DIGEST));
        assertTrue(verdict == IVerifier.Verdict.Valid, "valid");
        assertEq(consumer.lastOutput(), output, "handed over");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "paid");
        assertEq(registry.stakeOf(node), MIN_STAKE, "not slashed");
    }

    function testFuzzTheDigestIsTheSpecifiedOne(
        uint256 id,
        address who,
        bytes32 outputHash,
        bytes32 modelDigest
    ) public view {
        bytes32 inner = keccak256(
            abi.encode(
                keccak256("InferaAttestation.v1"),
                block.chainid,
                address(coordinator),
                id,
                who,
                keccak256(INPUT),
                outputHash,
                modelDigest
            )
        );
        assertEq(
            verifier.attestationDigest(id, who, keccak256(INPUT), outputHash, modelDigest),
            keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", inner)),
            "digest"
        );
    }

    function testAnotherNodeCannotCopyAProof() public {
        uint256 id = _verified();
        bytes memory proof = _proof(ATTESTER_KEY, id, node, OUTPUT, DIGEST); // signed for `node`
        _assertRejectedAndSlashed(id, node2, _deliver(node2, id, proof));
        assertTrue(_deliver(node, id, proof) == IVerifier.Verdict.Valid, "the node it names may use it");
    }

    function testFuzzAnUnregisteredKeyIsInvalidAndSlashes(uint256 key) public {
        key = bound(key, 1, 2 ** 128);
        if (key == ATTESTER_KEY) key += 1;
        uint256 id = _verified();
        _assertRejectedAndSlashed(id, node, _deliver(node, id, _proof(key, id, node, OUTPUT, DIGEST)));
    }

    function testFuzzAnotherModelDigestIsInvalid(bytes32 digest) public {
        if (digest == DIGEST) digest = keccak256(abi.encode(digest));
        uint256 id = _verified();
        _assertRejectedAndSlashed(
            id, node, _deliver(node, id, _proof(ATTESTER_KEY, id, node, OUTPUT, digest))
        );
    }

    function testAKeyOfAnotherModelIsInvalid() public {
        vm.prank(owner);
        verifier.setAttester(attester, MODEL, DIGEST, false);
        vm.prank(owner);
        verifier.setAttester(attester, keccak256("generate/smollm2@1"), DIGEST, true);
        uint256 id = _verified();
        _assertRejectedAndSlashed(
            id, node, _deliver(node, id, _proof(ATTESTER_KEY, id, node, OUTPUT, DIGEST))
        );
    }

    function testASignatureOverAnotherOutputIsInvalid() public {
        uint256 id = _verified();
        bytes memory proof = _proof(ATTESTER_KEY, id, node, hex"bad0", DIGEST);
        _assertRejectedAndSlashed(id, node, _deliver(node, id, proof));
    }

    function testAMalleableHighSSignatureIsInvalid() public {
        uint256 id = _verified();
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(ATTESTER_KEY, _digest(id, node, OUTPUT, DIGEST));
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        bytes memory flipped = abi.encodePacked(r, bytes32(n - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        _assertRejectedAndSlashed(id, node, _deliver(node, id, abi.encode(DIGEST, flipped)));
    }

    function testAnUndecodableProofRevertsAndSlashesNobody() public {
        uint256 id = _verified();
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.VerifierFailed.selector, id, address(verifier)));
        _deliver(node, id, hex"0102");
        assertEq(registry.stakeOf(node), MIN_STAKE, "no slash");
    }

    function testTheSlashIsCappedByTheStake() public {
        vm.prank(owner);
        verifier.setSlashAmount(5 ether);
        uint256 id = _verified();
        _deliver(node, id, abi.encode(DIGEST, hex"00")); // a malformed signature: invalid
        assertEq(registry.stakeOf(node), 0, "all it had");
        assertEq(registry.slashedBalanceOf(address(consumer)), MIN_STAKE, "credited");
    }

    function testFuzzOnlyTheCoordinatorCallsVerify(address caller) public {
        if (caller == address(coordinator)) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(VerifierBase.NotTheCoordinator.selector, caller));
        vm.prank(caller);
        verifier.verify(1, node, OUTPUT, "");
    }

    function testFuzzOnlyTheOwnerRegistersAttesters(address caller) public {
        if (caller == owner) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(VerifierBase.Unauthorized.selector, caller));
        vm.prank(caller);
        verifier.setAttester(caller, MODEL, DIGEST, true);
    }

    function testItIsAtomic() public view {
        assertEq(verifier.window(), 0, "no window");
        assertTrue(verifier.isAttester(attester, MODEL, DIGEST), "registered");
    }
}
