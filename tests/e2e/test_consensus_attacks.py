"""Adversarial checks of consensus requests on the multi-node rig (issue 19 review).

`x` is a staked node key driven by hand (no node process, no container): the adversary.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from eth_utils.crypto import keccak

from node.chain.consensus import commitment
from node.devnet import DEFAULT_FEE_WEI
from tests.e2e.test_consensus import ask, balance, events, merged, verification
from tests.multinode import MODEL, MultiNode

pytestmark = pytest.mark.e2e


def _send(rig: MultiNode, fn: Any, account: Any) -> Any:
    return rig.transact(fn, sender=account)


def test_bug_a_lazy_node_copies_an_honest_output_from_its_public_receipt_before_reveals(tmp_path: Path) -> None:
    """Copy-proof claim: 'nor guess a low-entropy output from it'. The public receipt serves the unsalted
    keccak256(output) during the commit phase, so a node that never computed matches it against the few outputs a
    consensus form allows (classify: (label, 0)), commits it, and is paid."""
    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        a = rig.add_node("a")
        x = rig.add_node("x")  # the copier: staked, never started, never calls a container
        rig.start(a)
        consumer: Any = rig.deploy("CallbackCounter", dep.coordinator.address)
        data = b"the honest answer"
        receipt = ask(rig, consumer, MODEL, data, 2, 2)
        rid, block = rig.dev.request_id_of(receipt), receipt["blockNumber"]
        rig.wait(lambda: len(events(rig, "Committed", rid, block)) == 1 or None, "a to commit")
        assert consumer.functions.results(rid).call() == 0

        # Commit phase still open (1 of 2). The honest node's receipt names the hash of its output.
        leaked = json.loads(a.api(f"/receipts/{rid}"))["receipt"]["output_hash"]
        assert leaked is not None
        candidates = [b"POSITIVE", b"NEGATIVE", b"the honest answer", b"something else"]  # a small output space
        (copied,) = [c for c in candidates if "0x" + keccak(c).hex() == leaked]

        salt = secrets.token_bytes(32)
        c = merged(rig).functions
        chain_id = rig.dev.w3.eth.chain_id
        mine = commitment(chain_id, dep.coordinator.address, rid, x.address, copied, salt)
        before = balance(rig, x.address)
        _send(rig, c.commit(rid, mine), x.account)
        rig.wait(lambda: len(events(rig, "Revealed", rid, block)) == 1 or None, "a to reveal")
        _send(rig, c.reveal(rid, copied, salt), x.account)
        assert consumer.functions.results(rid).call() == 1
        paid = {e["args"]["node"] for e in events(rig, "RequestFulfilled", rid, block)}
        assert x.address in paid  # paid for an output it never computed
        assert balance(rig, x.address) == before + DEFAULT_FEE_WEI
        assert rig.journal.read_text().count(data.hex()) == 1  # only a computed it


def test_no_quorum_then_reclaim_and_odd_receipt_ids(tmp_path: Path) -> None:
    """Two nodes reveal different outputs (n=2, k=2): no quorum; after the deadline the node reclaims on its own;
    exactly one error callback. Records the reason the consumer gets."""
    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        a = rig.add_node("a")
        x = rig.add_node("x")
        rig.start(a)
        consumer: Any = rig.deploy("CallbackCounter", dep.coordinator.address)
        receipt = ask(rig, consumer, MODEL, b"disagree", 2, 2)
        rid, block = rig.dev.request_id_of(receipt), receipt["blockNumber"]
        rig.wait(lambda: len(events(rig, "Committed", rid, block)) == 1 or None, "a to commit")
        c = merged(rig).functions
        salt = secrets.token_bytes(32)
        other = b"another answer"
        _send(
            rig,
            c.commit(rid, commitment(rig.dev.w3.eth.chain_id, dep.coordinator.address, rid, x.address, other, salt)),
            x.account,
        )
        # reveal twice / reveal by a node that never committed
        rig.wait(lambda: len(events(rig, "Revealed", rid, block)) == 1 or None, "a to reveal")
        _send(rig, c.reveal(rid, other, salt), x.account)
        with pytest.raises(Exception, match=r"AlreadyRevealed|revert"):
            _send(rig, c.reveal(rid, other, salt), x.account)
        rig.wait(
            lambda: (verification(a, rid) is not None and verification(a, rid).startswith("revealed")) or None,
            "a revealed",
        )
        assert consumer.functions.results(rid).call() == 0
        deadline = rig.dev.request_state(rid)["deadline"]
        rig.advance_to(deadline + 61)
        rig.wait(lambda: consumer.functions.errors(rid).call() == 1 or None, "a to reclaim", timeout_s=120)
        (reclaimed,) = events(rig, "Reclaimed", rid, block)
        ev = consumer.events.ErrorReceived().get_logs(from_block=block, argument_filters={"requestId": rid})
        print("RECLAIM", dict(reclaimed["args"]), "REASON", ev[0]["args"]["reason"])
        rig.wait(lambda: verification(a, rid) == "no quorum" or None, "a to record no quorum")
        print("STATUS", a.api("/status")[:3000].decode())
        print("JOBS", rig.dev.w3.eth.block_number)
        for path in (
            "/receipts/-1",
            "/receipts/" + "9" * 78,
            "/receipts/" + "9" * 79,
            "/receipts/%D9%A3",
            "/receipts/00" + str(rid),
            "/receipts/%201",
            "/receipts/1e3",
        ):
            try:
                print("GET", path, a.api(path)[:300])
            except urllib.error.HTTPError as exc:
                print("GET", path, exc.code, exc.read()[:300])
        print("RECEIPT", a.api(f"/receipts/{rid}").decode())
        print("LOG-TAIL", a.log_path.read_text()[-4000:])


@pytest.mark.parametrize("point", ["proof-saved", "tx-stored"])
def test_a_node_killed_around_its_commit_commits_and_reveals_once(tmp_path: Path, point: str) -> None:
    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        a, b = rig.add_node("a"), rig.add_node("b")
        rig.start(a)
        consumer: Any = rig.deploy("CallbackCounter", dep.coordinator.address)
        data = b"kill me around my commit"
        receipt = ask(rig, consumer, MODEL, data, 2, 2)
        rid, block = rig.dev.request_id_of(receipt), receipt["blockNumber"]
        rig.start_to_die(b, point)
        rig.start(b)
        rig.wait(lambda: consumer.functions.results(rid).call() == 1 or None, "the consensus callback")
        paid = {e["args"]["node"] for e in events(rig, "RequestFulfilled", rid, block)}
        assert paid == {a.address, b.address}
        assert len(events(rig, "Committed", rid, block)) == 2
        rig.wait(lambda: verification(b, rid) == "agreed" or None, "b agreed")
        assert rig.tx_count(b) == 2, rig.tx_count(b)
        assert rig.journal.read_text().count(data.hex()) == 2  # each node computed once


@pytest.mark.xfail(strict=True, reason="bug: Outcomes.reclaim_due skips confirmed jobs of redundancy 1")
def test_a_one_node_consensus_request_left_unrevealed_is_reclaimed_by_its_node(tmp_path: Path) -> None:
    """n = 1, k = 1: the node commits, dies before its reveal, comes back after the deadline. The request is open
    with no callback; the node must reclaim it (it does for n >= 2)."""
    import time

    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        a = rig.add_node("a")
        rig.start(a, fault="reveal-sending")
        consumer: Any = rig.deploy("CallbackCounter", dep.coordinator.address)
        receipt = ask(rig, consumer, MODEL, b"one node", 1, 1)
        rid = rig.dev.request_id_of(receipt)
        rig.died_at(a, "reveal-sending")
        assert verification(a, rid) == "committed"
        deadline = rig.dev.request_state(rid)["deadline"]
        rig.advance_to(deadline + 61)
        rig.start(a)
        time.sleep(15)
        rig.mine()
        time.sleep(5)
        print("VERIFICATION", verification(a, rid), "STATE", rig.dev.request_state(rid))
        print("OUTCOME", a.db("SELECT * FROM outcomes WHERE request_id = ?", str(rid)))
        assert consumer.functions.errors(rid).call() == 1, "no error callback: the request was never reclaimed"


@pytest.mark.xfail(strict=True, reason="bug: Outcomes.consensus_due takes the 64 oldest rows, every round")
def test_reveals_waiting_for_their_commit_window_do_not_starve_a_ready_reveal(tmp_path: Path) -> None:
    """64 consensus requests (n=2) that only this node serves wait for their commit window; a 65th (n=1) is ready
    to reveal at once. The revealer reads 64 (BATCH) `committed` rows, oldest change first, every round."""
    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        a = rig.add_node("a")
        rig.start(a)
        consumer: Any = rig.deploy("CallbackCounter", dep.coordinator.address)
        first = None
        for i in range(64):
            r = ask(rig, consumer, MODEL, f"waiting {i}".encode(), 2, 2)
            first = first or r["blockNumber"]
        rig.wait(
            lambda: len(a.db("SELECT 1 FROM outcomes WHERE verification = 'committed'")) == 64 or None,
            "64 commits",
            timeout_s=120,
        )
        receipt = ask(rig, consumer, MODEL, b"ready now", 1, 1)
        rid = rig.dev.request_id_of(receipt)
        rig.wait(lambda: verification(a, rid) == "committed" or None, "the ready request's commit")
        consensus = merged(rig).functions.consensusOf(rid).call()
        assert consensus[4], consensus  # revealOpen: 1 of 1 committed
        rig.wait(
            lambda: consumer.functions.results(rid).call() == 1 or None, "the ready request's callback", timeout_s=45
        )
