"""The devnet on this machine: what a tester's runs leave behind, and what its deploy sets up (verifiers, quorum)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils.crypto import keccak

from containers.runtime.attest import Attester, attestation_digest
from containers.runtime.wire import attestation
from node.chain.contracts import model_id
from node.devnet import (
    DEFAULT_FEE_WEI,
    DEVNET_CHALLENGE_WINDOW_S,
    DEVNET_MIN_FAILURE_REPORTS,
    DEVNET_VOTE_WINDOW_S,
    Devnet,
)


def test_a_devnet_leaves_no_anvil_state_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anvil persists old blocks' states under ~/.foundry/anvil/tmp by default and never removes them (a benchmark
    run left 75 GB there); the devnet's anvil keeps its states in memory only."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with Devnet(tmp_path / "dev") as dev:
        dev.start_anvil()
        dev.w3.provider.make_request("anvil_mine", [hex(1200)])  # type: ignore[arg-type]
        assert dev.w3.eth.block_number == 1200
    assert [p.relative_to(home) for p in home.rglob("*")] == []


@pytest.mark.usefixtures("contracts_built")
def test_the_devnet_ends_a_failing_request_at_one_report_and_verifies_attestations(tmp_path: Path) -> None:
    """The devnet's one node ends a failing request with its report (minFailureReports = 1), its two verifiers are
    approved and listed in deployment.json, and an attestation made with the container's `Attester` (a test key
    registered with `set_attester`) passes the AttestationVerifier."""
    with Devnet(tmp_path / "dev") as dev:
        dev.start_anvil()
        dep = dev.deploy()
        assert dep.attestation_verifier is not None
        assert dep.reexecution_verifier is not None
        c = dep.coordinator.functions
        assert c.minFailureReports().call() == DEVNET_MIN_FAILURE_REPORTS == 1
        for verifier in (dep.attestation_verifier, dep.reexecution_verifier):
            assert dep.registry.functions.isApprovedVerifier(verifier.address).call()
        written = json.loads((tmp_path / "dev" / "deployment.json").read_text())
        assert written["attestation_verifier"] == dep.attestation_verifier.address
        assert written["reexecution_verifier"] == dep.reexecution_verifier.address
        assert dep.reexecution_verifier.functions.window().call() == DEVNET_CHALLENGE_WINDOW_S + DEVNET_VOTE_WINDOW_S

        failing = dev.request_raw("echo", b"x")
        dev._transact(c.reportFailure(failing, "model down"), dev.node_account)
        assert dev.request_state(failing)["status"] == 3  # Failed: one report was enough

        attester = Account.from_key(keccak(b"devnet test attester"))
        digest = keccak(b"echo weights")
        dev.set_attester(attester.address, "echo", digest)
        deadline = dev.w3.eth.get_block("latest")["timestamp"] + 3600
        params = (model_id("echo"), 200_000, 1, deadline, "0x" + "00" * 20, DEFAULT_FEE_WEI)
        fn = c.requestVerifiedInference(params, b"hello", dep.attestation_verifier.address)
        receipt = dev._transact(fn, dev.user, DEFAULT_FEE_WEI)
        request_id = dev.request_id_of(receipt)
        assert dev.abi is not None
        created = next(raw for raw in receipt["logs"] if raw["address"] == dep.coordinator.address)
        assert dev.abi.decode_request_created(created).verifier == dep.attestation_verifier.address
        node, output = dev.node_account.address, b"olleh"
        signer = Attester(digest, bytes(attester.key))
        on_chain = dep.attestation_verifier.functions.attestationDigest(
            request_id, node, keccak(b"hello"), keccak(output), digest
        ).call()
        assert bytes(on_chain) == attestation_digest(
            dev.w3.eth.chain_id, dep.coordinator.address, request_id, node, b"hello", output, digest
        )
        proof = signer.proof(
            attestation(dev.w3.eth.chain_id, dep.coordinator.address, request_id, node), b"hello", output
        )
        dev._transact(c.deliverWithProof(request_id, output, proof), dev.node_account)
        state = dev.request_state(request_id)
        assert (state["status"], state["delivered"]) == (2, 1)  # Fulfilled by the attested output
