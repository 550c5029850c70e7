"""Verified requests on a real chain: anvil with the devnet's AttestationVerifier and ReexecutionVerifier, the node as
a process, the echo container started with an attestation key (or without one).

- attestation: the node sends the container the attestation context, delivers with `deliverWithProof` and is paid
  at once; a container whose key is not registered gets the delivery rejected and the node slashed, not paid;
- optimistic: the delivery is held (`VerificationPending`), the consumer is called back only after the verdict
  window, when the node's `finalizeDelivery` pays it; a dispute with a quorum of staked nodes rejects it and
  slashes the node;
- a verified request the node cannot serve (its verifier not listed, an attestation for a model without a key) is
  skipped: no container call, no transaction, the reason in the store and the metric.
"""

from __future__ import annotations

import json
import signal
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils.crypto import keccak
from web3.contract import Contract

from containers.runtime.attest import Attester, attestation_digest
from containers.runtime.wire import attestation
from node.chain.contracts import model_id
from node.config import ETH_TOKEN
from node.devnet import (
    CONTRACTS_DIR,
    DEFAULT_FEE_WEI,
    DEVNET_ATTESTATION_SLASH_WEI,
    DEVNET_CHALLENGE_WINDOW_S,
    DEVNET_REEXECUTION_SLASH_WEI,
    DEVNET_VOTE_WINDOW_S,
    Devnet,
    Proc,
    dev_account,
    free_port,
    wait_until,
)
from node.devnet.processes import http_ok
from tests.faults.conftest import read_store

pytestmark = pytest.mark.faults

MODEL = "echo/attested@1"
ATTESTER_KEY = "0x" + "a1" * 32
ROGUE_KEY = "0x" + "b2" * 32
DIGEST = keccak(text="echo weights v1")
SLASH_WEI = DEVNET_ATTESTATION_SLASH_WEI
assert DEVNET_REEXECUTION_SLASH_WEI == SLASH_WEI  # the tests check one slash amount for both verifiers
DELIVER_WITH_PROOF = keccak(text="deliverWithProof(uint256,bytes,bytes)")[:4]
FINALIZE = keccak(text="finalizeDelivery(uint256,address,bytes)")[:4]
REPORT_FAILURE = keccak(text="reportFailure(uint256,string)")[:4]


class Verified:
    """A devnet with both verifiers approved, and the helpers the tests share."""

    def __init__(self, dev: Devnet) -> None:
        self.dev = dev
        dep = dev.deployment
        assert dep is not None
        self.coordinator, self.registry = dep.coordinator, dep.registry
        assert dep.attestation_verifier is not None  # deployed and approved by the devnet
        assert dep.reexecution_verifier is not None
        self.attestation: Contract = dep.attestation_verifier
        self.optimistic: Contract = dep.reexecution_verifier
        self.node = dev.node_account.address
        # A consumer contract that records its callbacks (the forge test suite's), making the verified requests.
        artifact = json.loads((CONTRACTS_DIR / "out" / "Actors.sol" / "RecordingConsumer.json").read_text())
        factory = dev.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"]["object"])
        address = dev._transact(factory.constructor(self.coordinator.address), dev.deployer)["contractAddress"]
        self.consumer = dev.w3.eth.contract(address=address, abi=artifact["abi"])
        self.config: Path | None = None
        self.proc: Proc | None = None

    def start_container(self, key: str | None) -> str:
        """The echo container on a free port, with the attestation key `key` in a 0600 file (or none)."""
        port = free_port()
        argv = [sys.executable, "-m", "containers.echo", "--port", str(port), "--model-digest", DIGEST.hex()]
        if key is not None:
            path = self.dev.workdir / f"attester-{port}.key"
            path.write_text(key)
            path.chmod(0o600)
            argv += ["--attestation-key-file", str(path)]
        proc = self.dev.start(f"container-{port}", argv)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(url + "/health"), timeout_s=60, what="the echo container", alive=proc.check_alive)
        return url

    def start_node(self, url: str, *, attests: bool, verifiers: dict[str, str], **chain: Any) -> None:
        model = {"url": url, "timeout_s": 10, "attests": attests, **chain.pop("model", {})}
        self.config = self.dev.write_node_config({MODEL: model}, verifiers=verifiers, **chain)
        log_path = self.dev.workdir / "node.log"

        def said() -> int:  # the log is appended to across restarts: count the lines, not their presence
            text = log_path.read_text() if log_path.exists() else ""
            return sum(text.count(words) for words in ("listening to", "over HTTP every"))

        before = said()
        self.proc = self.dev.start_node(self.config)
        proc = self.proc
        wait_until(lambda: said() > before, timeout_s=60, what="the node to listen", alive=proc.check_alive)

    def register_attester(self, key: str) -> None:
        self.dev.set_attester(Account.from_key(key).address, MODEL, DIGEST)

    def request(self, verifier: Contract, input_: bytes) -> int:
        dev = self.dev
        deadline = int(dev.w3.eth.get_block("latest")["timestamp"]) + 3600
        params = (model_id(MODEL), 200_000, 1, deadline, ETH_TOKEN, DEFAULT_FEE_WEI)
        fn = self.consumer.functions.requestVerified(params, input_, verifier.address)
        return dev.request_id_of(dev._transact(fn, dev.user, DEFAULT_FEE_WEI))

    def callbacks(self) -> tuple[int, bytes]:
        """How many results the consumer was handed, and the last one."""
        return int(self.consumer.functions.calls().call()), bytes(self.consumer.functions.lastOutput().call())

    def row(self, rid: int) -> tuple[Any, ...]:
        """(state, error, verification, callback_ok) of the request's job, or () while there is none."""
        assert self.config is not None
        found = read_store(
            self.config,
            (self.dev.store_defaults or {}).get("url"),
            "SELECT j.state, j.error, o.verification, o.callback_ok FROM jobs j"
            " LEFT JOIN outcomes o ON o.request_id = j.request_id WHERE j.request_id = ?",
            str(rid),
        )
        return tuple(found[0]) if found else ()

    def wait_row(self, rid: int, what: str, check: Any, timeout_s: float = 60) -> tuple[Any, ...]:
        alive = self.proc.check_alive if self.proc is not None else None
        wait_until(lambda: bool(self.row(rid)) and check(self.row(rid)), timeout_s=timeout_s, what=what, alive=alive)
        return self.row(rid)

    def events(self, name: str, rid: int) -> list[Any]:
        dep = self.dev.deployment
        assert dep is not None
        event = getattr(self.coordinator.events, name)
        return [e for e in event.get_logs(from_block=dep.start_block) if e["args"]["requestId"] == rid]

    def earned(self) -> int:
        return int(self.coordinator.functions.balanceOf(ETH_TOKEN, self.node).call())

    def stake(self) -> int:
        return int(self.registry.functions.stakeOf(self.node).call())

    def node_calls(self) -> list[bytes]:
        """The 4-byte selectors of every transaction the node sent to the coordinator."""
        w3, found = self.dev.w3, []
        dep = self.dev.deployment
        assert dep is not None
        for number in range(dep.start_block, w3.eth.block_number + 1):
            for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
                if tx["from"] == self.node and tx["to"] == self.coordinator.address:  # type: ignore[index]
                    found.append(bytes(tx["input"])[:4])  # type: ignore[index]
        return found

    def pass_time(self, seconds: int) -> None:
        self.dev.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        self.dev.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgresql"])
def chain(contracts_built: None, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Verified]:
    """anvil with the contracts; the node's store an SQLite file, or a PostgreSQL database (one suite, both)."""
    with Devnet(tmp_path) as dev:
        if request.param == "postgresql":
            dev.store_defaults = {"url": request.getfixturevalue("postgres").new_database(), "lease_ttl_s": 3}
        dev.start_anvil()
        dev.deploy()
        yield Verified(dev)


def test_the_containers_attestation_digest_is_the_verifiers(chain: Verified) -> None:
    """`containers.runtime.attest.attestation_digest` against `AttestationVerifier.attestationDigest` on the chain."""
    view = chain.attestation.functions.attestationDigest
    for rid, input_, output in [(1, b"in", b"out"), (2**200, b"", b"\x00" * 300), (7, "é".encode(), b"x")]:
        onchain = view(rid, chain.node, keccak(input_), keccak(output), DIGEST).call()
        chain_id = chain.dev.w3.eth.chain_id
        mine = attestation_digest(chain_id, chain.coordinator.address, rid, chain.node, input_, output, DIGEST)
        assert bytes(onchain) == mine


def test_an_attested_delivery_is_paid_at_once(chain: Verified) -> None:
    chain.register_attester(ATTESTER_KEY)
    url = chain.start_container(ATTESTER_KEY)
    chain.start_node(url, attests=True, verifiers={chain.attestation.address: "attestation"})
    rid = chain.request(chain.attestation, b"attest this")

    _, error, verification, callback_ok = chain.wait_row(rid, "the attested delivery", lambda r: r[0] == "confirmed")
    assert (error, verification, callback_ok) == (None, "valid", 1)
    assert chain.callbacks() == (1, b"attest this")  # called back in the delivery itself
    assert chain.earned() == DEFAULT_FEE_WEI
    fulfilled = chain.events("RequestFulfilled", rid)
    assert len(fulfilled) == 1
    assert fulfilled[0]["args"]["outputHash"] == keccak(b"attest this")
    assert chain.node_calls() == [DELIVER_WITH_PROOF]


def test_a_node_killed_after_its_proof_was_stored_delivers_it_after_a_restart(chain: Verified) -> None:
    chain.register_attester(ATTESTER_KEY)
    url = chain.start_container(ATTESTER_KEY)
    dev = chain.dev
    chain.config = dev.write_node_config(
        {MODEL: {"url": url, "timeout_s": 10, "attests": True}}, verifiers={chain.attestation.address: "attestation"}
    )
    dying = dev.start_node(chain.config, env={"INFERA_FAULT_POINT": "proof-saved"})
    rid = chain.request(chain.attestation, b"survive this")
    wait_until(lambda: dying.popen.poll() is not None, timeout_s=60, what="the node to die with the proof stored")
    dev.procs.remove(dying)
    assert dying.popen.returncode == -signal.SIGKILL
    assert chain.row(rid)[0] == "computed"
    assert chain.node_calls() == []

    chain.proc = dev.start_node(chain.config)
    chain.wait_row(rid, "the stored proof delivered", lambda r: r[2] == "valid")
    assert chain.node_calls() == [DELIVER_WITH_PROOF]
    assert chain.earned() == DEFAULT_FEE_WEI
    with urllib.request.urlopen(f"{url}/info", timeout=5) as resp:
        assert json.loads(resp.read())["batching"]["batches"] == 1  # computed once: the restart sent what was stored


def test_a_proof_the_verifier_would_reject_is_never_sent_and_a_node_that_sends_one_is_slashed(chain: Verified) -> None:
    """The node's container signs with a key the verifier does not know: the simulation of `deliverWithProof` says
    Invalid, so the node sends nothing (no gas, no slash) and says why. A staked node that does send such a proof
    (here a second dev account, sending by hand) is rejected, not paid, and slashed."""
    chain.register_attester(ATTESTER_KEY)
    url = chain.start_container(ROGUE_KEY)  # signs, but not with the registered key
    chain.start_node(url, attests=True, verifiers={chain.attestation.address: "attestation"})
    stake = chain.stake()
    rid = chain.request(chain.attestation, b"attest this")

    _, error, _, _ = chain.wait_row(rid, "the delivery refused before sending", lambda r: r[0] == "failed")
    assert "the verifier would reject this proof" in error
    assert chain.node_calls() == []  # nothing sent: no gas, no failure report
    assert chain.stake() == stake
    assert chain.callbacks() == (0, b"")

    dev = chain.dev
    rogue = dev_account(6)
    dev.register_node(rogue)
    rogue_stake = int(chain.registry.functions.stakeOf(rogue.address).call())
    context = attestation(dev.w3.eth.chain_id, chain.coordinator.address, rid, rogue.address)
    proof = Attester(DIGEST, bytes.fromhex(ROGUE_KEY[2:])).proof(context, b"attest this", b"a forged output")
    dev._transact(chain.coordinator.functions.deliverWithProof(rid, b"a forged output", proof), rogue)
    rejected = chain.events("DeliveryRejected", rid)
    assert [e["args"]["node"] for e in rejected] == [rogue.address]
    assert chain.events("RequestFulfilled", rid) == []
    assert chain.coordinator.functions.balanceOf(ETH_TOKEN, rogue.address).call() == 0  # not paid
    assert chain.registry.functions.stakeOf(rogue.address).call() == rogue_stake - SLASH_WEI  # slashed
    assert chain.callbacks() == (0, b"")  # the consumer never saw the unverified output


def test_an_optimistic_delivery_is_paid_and_called_back_only_after_its_window(chain: Verified) -> None:
    url = chain.start_container(None)
    chain.start_node(url, attests=False, verifiers={chain.optimistic.address: "optimistic"})
    rid = chain.request(chain.optimistic, b"check me later")

    state, _, _, callback_ok = chain.wait_row(
        rid, "the delivery held for a verdict", lambda r: (r[2] or "").startswith("pending until ")
    )
    assert state == "confirmed"
    assert len(chain.events("VerificationPending", rid)) == 1
    assert chain.events("RequestFulfilled", rid) == []  # no callback before the verdict
    assert (chain.callbacks(), callback_ok) == ((0, b""), None)
    assert chain.earned() == 0

    chain.pass_time(DEVNET_CHALLENGE_WINDOW_S + DEVNET_VOTE_WINDOW_S + 1)
    chain.wait_row(rid, "the held delivery finalized", lambda r: r[2] == "valid", timeout_s=90)
    assert chain.row(rid)[3] == 1  # callbackOk, from the finalizing transaction's RequestFulfilled
    assert chain.callbacks() == (1, b"check me later")
    assert len(chain.events("RequestFulfilled", rid)) == 1
    assert chain.earned() == DEFAULT_FEE_WEI
    assert chain.node_calls() == [DELIVER_WITH_PROOF, FINALIZE]


def test_a_disputed_optimistic_delivery_is_rejected_and_the_node_slashed(chain: Verified) -> None:
    dev = chain.dev
    challenger, voter = dev_account(5), dev_account(6)
    for account in (challenger, voter):
        dev.register_node(account)
    url = chain.start_container(None)
    chain.start_node(url, attests=False, verifiers={chain.optimistic.address: "optimistic"})
    stake = chain.stake()
    rid = chain.request(chain.optimistic, b"the right answer is elsewhere")
    chain.wait_row(rid, "the delivery held", lambda r: (r[2] or "").startswith("pending until "))

    theirs = keccak(b"another output")
    dev._transact(chain.optimistic.functions.dispute(rid, chain.node, theirs), challenger)
    dev._transact(chain.optimistic.functions.vote(rid, chain.node, theirs), voter)
    assert len(chain.events("DeliveryRejected", rid)) == 1
    assert chain.stake() == stake - SLASH_WEI

    chain.pass_time(DEVNET_CHALLENGE_WINDOW_S + DEVNET_VOTE_WINDOW_S + 1)
    chain.wait_row(rid, "the rejection recorded", lambda r: r[2] == "rejected", timeout_s=90)
    assert chain.events("RequestFulfilled", rid) == []
    assert chain.callbacks() == (0, b"")
    assert chain.earned() == 0
    assert chain.node_calls() == [DELIVER_WITH_PROOF]  # finalize simulated first: nothing was pending any more


def test_verified_requests_the_node_cannot_serve_are_skipped_without_gas(chain: Verified) -> None:
    url = chain.start_container(None)
    chain.start_node(url, attests=False, verifiers={chain.attestation.address: "attestation"})
    nonce = chain.dev.w3.eth.get_transaction_count(chain.node)
    unlisted = chain.request(chain.optimistic, b"unlisted verifier")
    unsigned = chain.request(chain.attestation, b"no key to sign with")

    _, why, _, _ = chain.wait_row(unlisted, "the unlisted verifier skipped", lambda r: r[0] == "skipped")
    assert f"verified by {chain.optimistic.address}, which this node does not list in [chain] verifiers" in why
    _, why, _, _ = chain.wait_row(unsigned, "the attestation skipped", lambda r: r[0] == "skipped")
    assert "holds no attestation key here (set `attests = true`" in why
    assert chain.dev.w3.eth.get_transaction_count(chain.node) == nonce
    assert chain.node_calls() == []
    with urllib.request.urlopen(f"http://127.0.0.1:{chain.dev.api_port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert f'infera_requests_skipped_total{{model="{MODEL}",reason="verifier_not_supported"}} 2.0' in metrics
    with urllib.request.urlopen(f"{url}/info", timeout=5) as resp:
        assert json.loads(resp.read())["batching"]["batches"] == 0  # nothing reached the container


def test_an_operators_verifier_mistake_is_never_reported_as_the_requests_failure(chain: Verified) -> None:
    """`attests = true` with a container that has no key, and an attestation verifier listed as optimistic: the node
    fails or skips those jobs locally with the reason and sends nothing (no failure report that would fail the
    request for every node); the requests stay open for nodes configured right."""
    url = chain.start_container(None)  # no attestation key, although the config says the model attests
    chain.start_node(url, attests=True, verifiers={chain.attestation.address: "optimistic"})
    wrong_kind = chain.request(chain.attestation, b"judged as optimistic")
    _, why, _, _ = chain.wait_row(wrong_kind, "the wrong-kind delivery skipped", lambda r: r[0] == "skipped")
    assert "VerifierFailed" in why
    assert "check the verifier's kind in [chain] verifiers" in why
    assert chain.node_calls() == []
    assert chain.events("FailureReported", wrong_kind) == []
    assert chain.dev.request_state(wrong_kind)["status"] == 1  # still open

    assert chain.proc is not None
    chain.dev.stop(chain.proc)
    chain.start_node(url, attests=True, verifiers={chain.attestation.address: "attestation"})
    keyless = chain.request(chain.attestation, b"no key in the container")
    _, why, _, _ = chain.wait_row(keyless, "the keyless attestation failed locally", lambda r: r[0] == "failed")
    assert "has attests = true but its container gives no attestation" in why
    assert "no attestation key" in why
    assert chain.node_calls() == []
    assert chain.events("FailureReported", keyless) == []
    assert chain.dev.request_state(keyless)["status"] == 1


def test_a_challenging_node_disputes_another_nodes_wrong_optimistic_delivery(chain: Verified) -> None:
    dev = chain.dev
    cheat, voter = dev_account(5), dev_account(6)
    for account in (cheat, voter):
        dev.register_node(account)
    url = chain.start_container(None)
    # It serves the model only for ten times the request's fee: it leaves the request to the cheat, but judges it.
    chain.start_node(
        url,
        attests=False,
        verifiers={chain.optimistic.address: "optimistic"},
        challenge=True,
        model={"accepted_payments": {"ETH": 10 * DEFAULT_FEE_WEI}},
    )
    rid = chain.request(chain.optimistic, b"what is right")
    chain.wait_row(rid, "the request skipped by the fee policy", lambda r: r[0] == "skipped")
    stake = int(chain.registry.functions.stakeOf(cheat.address).call())
    dev._transact(chain.coordinator.functions.deliverWithProof(rid, b"wrong", b""), cheat)

    disputes = chain.optimistic.events.DisputeOpened
    wait_until(
        lambda: any(e["args"]["requestId"] == rid for e in disputes.get_logs(from_block=0)),
        timeout_s=60,
        what="the node's dispute",
        alive=chain.proc.check_alive if chain.proc else None,
    )
    (opened,) = [e for e in disputes.get_logs(from_block=0) if e["args"]["requestId"] == rid]
    assert opened["args"]["challenger"] == chain.node
    assert opened["args"]["node"] == cheat.address
    assert opened["args"]["outputHash"] == keccak(b"what is right")  # the echo model's output

    dev._transact(chain.optimistic.functions.vote(rid, cheat.address, keccak(b"what is right")), voter)
    assert len(chain.events("DeliveryRejected", rid)) == 1
    assert int(chain.registry.functions.stakeOf(cheat.address).call()) == stake - SLASH_WEI
    dispute = keccak(text="dispute(uint256,address,bytes32)")[:4]
    w3, sent = dev.w3, []
    for number in range(dev.deployment.start_block, w3.eth.block_number + 1):  # type: ignore[union-attr]
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] == chain.node:  # type: ignore[index]
                sent.append((tx["to"], bytes(tx["input"])[:4]))  # type: ignore[index]
    assert (chain.optimistic.address, dispute) in sent
    assert chain.node_calls() == []  # nothing sent to the coordinator: the request was not this node's to serve
