"""Consensus requests under attack and at their edges, on the multi-node rig (tests/multinode.py): what a review that
attacked the feature found, kept as regression tests.

`x` is a staked node key driven by hand (no node process, no container): the adversary or the odd one out.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from eth_utils.crypto import keccak

from node.chain.commitments import commitment
from node.devnet import DEFAULT_FEE_WEI, DevnetError
from tests.e2e.test_consensus import COMMIT_WINDOW_S, ask, balance, events, merged, verification
from tests.multinode import MODEL, MultiNode

pytestmark = pytest.mark.e2e


def _send(rig: MultiNode, fn: Any, account: Any) -> Any:
    return rig.transact(fn, sender=account)


def test_a_consensus_receipt_names_no_output_hash_until_the_node_revealed(tmp_path: Path) -> None:
    """Copy-proof: a node's public receipt must not give its answer away during the commit phase. Its plain
    keccak256(output) would let a node that never computed match it against the few outputs a consensus form allows
    (a label), commit that and be paid (found by the review: it was paid)."""
    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        a = rig.add_node("a")
        rig.add_node("x")  # a second staked key that never commits: the commit phase stays open
        rig.start(a)
        consumer: Any = rig.deploy("CallbackCounter", dep.coordinator.address)
        data = b"the honest answer"
        receipt = ask(rig, consumer, MODEL, data, 2, 1)  # a quorum of one: a's reveal alone settles it
        rid, block = rig.dev.request_id_of(receipt), receipt["blockNumber"]
        rig.wait(lambda: len(events(rig, "Committed", rid, block)) == 1 or None, "a to commit")
        during = json.loads(a.api(f"/receipts/{rid}"))["receipt"]
        assert during["verification"] == "committed"
        assert during["output_hash"] is None  # nothing to match guesses against
        assert during["input_hash"] == "0x" + keccak(data).hex()

        rig.increase_time(COMMIT_WINDOW_S + 1)  # the window passes with one commit: a reveals
        rig.wait(lambda: len(events(rig, "Revealed", rid, block)) == 1 or None, "a to reveal")
        rig.wait(lambda: verification(a, rid) == "agreed" or None, "a to see its reveal paid")
        after = json.loads(a.api(f"/receipts/{rid}"))["receipt"]
        assert after["output_hash"] == "0x" + keccak(data).hex()  # public on-chain now, so in the receipt too


def test_no_quorum_is_reclaimed_by_the_node_with_one_error_callback_that_says_so(tmp_path: Path) -> None:
    """Two nodes reveal different outputs (n=2, k=2): no quorum; a second reveal is refused; after the deadline the
    node reclaims on its own: one error callback naming the missing quorum, everything refunded, nobody paid."""
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
        mine = commitment(rig.dev.w3.eth.chain_id, dep.coordinator.address, rid, x.address, other, salt)
        _send(rig, c.commit(rid, mine), x.account)
        rig.wait(lambda: len(events(rig, "Revealed", rid, block)) == 1 or None, "a to reveal")
        _send(rig, c.reveal(rid, other, salt), x.account)
        with pytest.raises(DevnetError):
            _send(rig, c.reveal(rid, other, salt), x.account)  # AlreadyRevealed
        rig.wait(lambda: (verification(a, rid) or "").startswith("revealed") or None, "a to see its reveal mined")
        assert consumer.functions.results(rid).call() == 0
        refunds_before = balance(rig, consumer.address)
        rig.advance_to(rig.dev.request_state(rid)["deadline"] + 61)  # past the deadline and any node's spread
        rig.wait(lambda: consumer.functions.errors(rid).call() == 1 or None, "a to reclaim", timeout_s=120)
        (reclaimed,) = events(rig, "Reclaimed", rid, block)
        assert reclaimed["args"]["refund"] == 2 * DEFAULT_FEE_WEI
        assert balance(rig, consumer.address) == refunds_before + 2 * DEFAULT_FEE_WEI
        (error,) = consumer.events.ErrorReceived().get_logs(from_block=block, argument_filters={"requestId": rid})
        assert error["args"]["reason"] == "deadline: no quorum (2 of 2 revealed, 2 needed)"
        rig.wait(lambda: verification(a, rid) == "no quorum" or None, "a to record no quorum")
        assert not events(rig, "RequestFulfilled", rid, block)
        # Receipt ids a client may get wrong: refused (400) or unknown (404), never an error page.
        for path, code in (
            ("/receipts/-1", 400),
            ("/receipts/" + "9" * 79, 400),
            ("/receipts/%D9%A3", 400),
            ("/receipts/%201", 400),
            ("/receipts/1e3", 400),
            ("/receipts/" + "9" * 78, 404),
        ):
            with pytest.raises(urllib.error.HTTPError) as refused:
                a.api(path)
            assert refused.value.code == code, path
            assert "error" in json.loads(refused.value.read())


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


def test_a_one_node_consensus_request_left_unrevealed_is_reclaimed_by_its_node(tmp_path: Path) -> None:
    """n = 1, k = 1: the node commits, dies before its reveal, comes back after the deadline. The request is open
    with no callback: the node reclaims it (the review found it never did: a committed job looked delivered)."""
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
        rig.advance_to(rig.dev.request_state(rid)["deadline"] + 61)
        rig.start(a)
        rig.wait(lambda: consumer.functions.errors(rid).call() == 1 or None, "a to reclaim", timeout_s=120)
        assert consumer.functions.results(rid).call() == 0
        rig.wait(lambda: (verification(a, rid) or "").startswith("no quorum") or None, "a to record no quorum")


def test_reveals_waiting_for_their_commit_window_do_not_starve_a_ready_reveal(tmp_path: Path) -> None:
    """64 consensus requests (n=2) that only this node serves wait for their commit window; a 65th (n=1) is ready
    to reveal at once. The revealer reads 64 (BATCH) `committed` rows a round, oldest change first: rows that wait
    go to the back of the queue, so the ready one is revealed (the review found it starved)."""
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


def test_a_node_does_not_reveal_when_too_few_committed_for_a_quorum(tmp_path: Path) -> None:
    """n = 2, k = 2, and only this node commits before the window closes: a reveal could never reach the quorum, so
    the node spends no gas on one; the request is reclaimed after its deadline (one error callback, all refunded)."""
    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        a = rig.add_node("a")
        rig.add_node("x")  # staked, never commits
        rig.start(a)
        consumer: Any = rig.deploy("CallbackCounter", dep.coordinator.address)
        receipt = ask(rig, consumer, MODEL, b"alone", 2, 2)
        rid, block = rig.dev.request_id_of(receipt), receipt["blockNumber"]
        rig.wait(lambda: verification(a, rid) == "committed" or None, "a to commit")
        txs = rig.tx_count(a)
        rig.increase_time(COMMIT_WINDOW_S + 1)
        rig.wait(lambda: (verification(a, rid) or "").startswith("no quorum (only 1 of the 2") or None, "a to give up")
        assert not events(rig, "Revealed", rid, block)
        assert rig.tx_count(a) == txs
        rig.advance_to(rig.dev.request_state(rid)["deadline"] + 61)
        rig.wait(lambda: consumer.functions.errors(rid).call() == 1 or None, "a to reclaim", timeout_s=120)
        assert rig.tx_count(a) == txs + 1  # the reclaim
