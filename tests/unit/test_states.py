"""The job state table: every move the node makes is allowed, every other one raises before anything is written."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from node.jobs.states import RESUMABLE, TERMINAL, TRANSITIONS, IllegalTransition, JobState, check, check_revival
from node.jobs.store import JobStore, StoredTx
from tests.unit.test_store import ADDR, request, store

S = JobState

#: The moves the node's layers make, as (from, to): the scheduler, the transaction layer, reorgs, the operator.
USED = {
    (S.SEEN, S.RUNNING),
    (S.RUNNING, S.RUNNING),  # an attempt counted, or given back
    (S.RUNNING, S.COMPUTED),  # the output, or a failure to report
    (S.SEEN, S.COMPUTED),  # attempts used up before a restart: a failure to report
    (S.SEEN, S.EXPIRED),  # deadline passed before it ran
    (S.RUNNING, S.FAILED),  # a bug in the node, for this job
    (S.COMPUTED, S.SUBMITTED),
    (S.COMPUTED, S.COMPUTED),  # a delivery refused: a failure report instead
    (S.COMPUTED, S.EXPIRED),
    (S.SUBMITTED, S.SUBMITTED),  # a replacement transaction
    (S.SUBMITTED, S.COMPUTED),  # the transaction was dropped: sent again, not recomputed
    (S.SUBMITTED, S.CONFIRMED),
    (S.SUBMITTED, S.FAILED),
    (S.SUBMITTED, S.EXPIRED),
    (S.CONFIRMED, S.ORPHANED),
    (S.FAILED, S.SEEN),  # `infera jobs retry`
    (S.FAILED, S.COMPUTED),
    (S.SEEN, S.SKIPPED),  # outside the model's fee policy
    (S.SKIPPED, S.SEEN),  # `infera jobs retry` after the operator changed the policy
}


def test_every_move_the_node_makes_is_in_the_table() -> None:
    for before, after in USED:
        check(1, before, after)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (S.CONFIRMED, S.SUBMITTED),  # a delivered job sent again
        (S.CONFIRMED, S.RUNNING),  # a delivered job recomputed
        (S.SUBMITTED, S.RUNNING),  # a sent job recomputed
        (S.EXPIRED, S.COMPUTED),
        (S.SEEN, S.SUBMITTED),  # sent without an output
        (S.SEEN, S.CONFIRMED),
        (S.RUNNING, S.SUBMITTED),
        (S.ORPHANED, S.SUBMITTED),
        (S.ORPHANED, S.COMPUTED),  # a send simulated before the reorg must not bring an orphaned job back
        (S.ORPHANED, S.SEEN),
        (S.SKIPPED, S.SUBMITTED),  # a skipped job never sends
        (S.RUNNING, S.SKIPPED),  # the policy is judged before any work
    ],
)
def test_a_move_the_protocol_forbids_raises(before: JobState, after: JobState) -> None:
    with pytest.raises(IllegalTransition, match=f"{before} -> {after}"):
        check(7, before, after)


def test_settled_states_lead_nowhere_but_a_reorg_or_the_operator() -> None:
    for state in TERMINAL - {S.FAILED, S.ORPHANED, S.SKIPPED}:
        assert TRANSITIONS[state] == {S.ORPHANED}
    assert TRANSITIONS[S.SKIPPED] == {S.ORPHANED, S.SEEN}  # only `jobs retry` takes a skipped job up again
    assert not any(S.SUBMITTED in TRANSITIONS[s] for s in TERMINAL)
    assert set(RESUMABLE).isdisjoint(TERMINAL)
    assert set(TRANSITIONS) == set(S)  # every state has a row


def test_an_illegal_move_writes_nothing(store_at: str) -> None:
    s = store(store_at)
    job = s.add(request(1), "m")
    assert job is not None
    with pytest.raises(IllegalTransition):
        s.update(job, JobState.CONFIRMED, tx_hash="0xbeef")
    assert (job.state, job.tx_hash) == (S.SEEN, None)
    again = JobStore(store_at, chain_id=31337, coordinator=ADDR).record(1)
    assert again is not None
    assert again.job.state is S.SEEN


def test_a_transaction_cannot_carry_a_job_that_is_not_computed(store_at: str) -> None:
    s = store(store_at)
    job = s.add(request(2), "m")
    assert job is not None
    tx = StoredTx(ADDR, 0, ["0xaa"], b"raw", {}, [(2, False)], sent_block=1)
    with pytest.raises(IllegalTransition):
        s.add_tx(tx, [job])
    assert s.open_txs(ADDR) == []  # the whole commit was rolled back


def test_the_table_is_closed_under_the_states() -> None:
    for before, after in itertools.product(S, S):
        allowed = after in TRANSITIONS[before]
        if allowed:
            check(0, before, after)
        else:
            with pytest.raises(IllegalTransition):
                check(0, before, after)


def test_a_range_and_its_cursor_are_one_commit(store_at: str) -> None:
    """The listener's hand-off: job rows, cursor and hashes together; duplicates and own delegated calls dropped."""
    s = store(store_at)
    jobs = s.record_requests([(request(1), "m"), (request(2), "m")], cursor=11, hashes=[(10, "0xaa")])
    assert [j.request_id for j in jobs] == [1, 2]
    assert (s.cursor(0), s.blocks()) == (11, {10: "0xaa"})
    assert s.record_requests([(request(2), "m")], cursor=12) == []
    assert s.duplicates == 1
    tx = StoredTx(ADDR, 0, ["0xca11"], b"raw", {}, [], sent_block=1)  # a deliverDelegated call: carries no job
    s.add_tx(tx, [])
    own = dataclasses.replace(request(3), tx_hash="0xCA11")  # its RequestCreated: delivered by that very call
    assert s.record_requests([(own, "m")], cursor=13) == []
    s.close()
    reopened = store(store_at)  # the delegated call's hashes survive a restart
    assert "0xca11" in reopened.call_hashes
    assert reopened.cursor(0) == 13
    assert {j.request_id for j in reopened.resumable()} == {1, 2}


def test_only_a_reincluded_request_revives_an_orphaned_job(store_at: str) -> None:
    s = store(store_at)
    job = s.add(request(5, block=20), "m")
    assert job is not None
    s.update(job, JobState.RUNNING, attempts=1)
    assert s.orphan_from(20) == [5]
    assert job.state is S.ORPHANED
    with pytest.raises(IllegalTransition):  # the stale holder of the job (a send in flight) cannot revive it
        s.update(job, JobState.COMPUTED, failure="UnknownRequest")
    revived = s.add(request(5, block=21, block_hash="0xbb"), "m")  # the request again, on the new branch
    assert revived is not None
    assert revived.state is S.SEEN
    assert s.duplicates == 0
    with pytest.raises(IllegalTransition):
        check_revival(5, S.CONFIRMED, S.SEEN)


def test_a_replacement_transactions_jobs_are_kept_across_a_restart(store_at: str) -> None:
    """A replacement that carries fewer jobs (or a nonce fill that carries none) is stored as it is, so a restarted
    node does not settle jobs by a transaction that no longer carries them."""
    s = store(store_at)
    job = s.add(request(3), "m")
    assert job is not None
    s.update(job, JobState.COMPUTED, output=b"x")
    tx = StoredTx(ADDR, 4, ["0xaa"], b"raw", {}, [(3, False)], sent_block=1)
    s.add_tx(tx, [job])
    tx.items, tx.hashes = [], ["0xaa", "0xbb"]  # filled with a 0-value transfer
    s.update_tx(tx)
    s.close()
    (reloaded,) = store(store_at).open_txs(ADDR)
    assert (reloaded.items, reloaded.hashes) == ([], ["0xaa", "0xbb"])
