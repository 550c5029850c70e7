"""Kill the node anywhere: 200 requests, some made while it is down (backfill) and some live, the node SIGKILLed at
20 seeded random moments spread over the whole run and SIGTERMed twice; afterwards every request was delivered
exactly once, no transaction reverted and the node's nonces run without a gap. Over a WebSocket and with HTTP
polling.

A moment is "random" by what the node has done, not by a clock: each kill waits until a random number of the
newest batch's jobs reached a random state (seen, running, computed, submitted, confirmed), so kills land at every
stage of a job, the hand-off included. The seed is printed; `INFERA_KILL_SEED` replays a run.

Computed once: a job whose output was committed when the node died is never computed again. The only computation
a kill can repeat is one whose answer the container sent while the node was dying, before the output's commit; the
test checks that every input computed twice was uncommitted (seen/running) in the store right after some SIGKILL.
"""

from __future__ import annotations

import os
import random

import pytest

from node.devnet import wait_until
from tests.faults.conftest import MODEL, FaultRig

pytestmark = pytest.mark.faults

REQUESTS = 200
SIGKILLS = 20
SIGTERMS = 2
STAGES = ("seen", "running", "computed", "submitted", "confirmed")


def _stop(rig: FaultRig) -> None:
    """SIGTERM: the node finishes what is running and stops; it must exit 0 on its own."""
    assert rig.node is not None
    assert rig.dev.stop(rig.node, timeout_s=60) == 0, f"the node did not stop cleanly:\n{rig.node.log_tail()}"
    rig.restarts += 1


@pytest.mark.parametrize("transport", ["ws", "http"])
def test_kill_anywhere_loses_repeats_and_reverts_nothing(rig: FaultRig, transport: str) -> None:
    seed = int(os.environ.get("INFERA_KILL_SEED") or random.randrange(2**32))
    print(f"kill-anywhere seed {seed} ({transport}); replay with INFERA_KILL_SEED={seed}")
    rng = random.Random(seed)
    dev = rig.dev
    rig.configure(ws=transport == "ws", poll_interval_s=0.2)
    stops = ["kill"] * SIGKILLS + ["term"] * SIGTERMS
    rng.shuffle(stops)
    batches = [REQUESTS // len(stops)] * len(stops)
    batches[-1] += REQUESTS - sum(batches)
    inputs = [f"anywhere-{i:03d}".encode() for i in range(REQUESTS)]
    ids: list[int] = []
    uncommitted_at_kills: set[int] = set()  # request ids in seen/running right after a SIGKILL
    done = 0
    for n, (stop, size) in enumerate(zip(stops, batches, strict=True)):  # the node is down when a round starts
        batch = inputs[done : done + size]
        done += size
        down = rng.random() < 0.35  # made while the node is down: the backfill finds them; else live
        if not down:
            rig.start_node()
        new = dev.request_many(MODEL, batch)
        ids += new
        if down:
            rig.start_node()
        stage, reached = rng.choice(STAGES), rng.randint(1, size)
        later = (*STAGES[STAGES.index(stage) :], "failed", "expired")

        def progressed(new: list[int] = new, later: tuple[str, ...] = later, reached: int = reached) -> bool:
            marks = ",".join("?" * len(new))
            rows = rig.db(f"SELECT state FROM jobs WHERE request_id IN ({marks})", *map(str, new))
            return sum(1 for (state,) in rows if state in later) >= reached

        wait_until(progressed, timeout_s=60, what=f"round {n}: {reached} job(s) {stage}", interval_s=0.01)
        if stop == "kill":
            rig.kill_node()
            rows = rig.db("SELECT request_id FROM jobs WHERE state IN (?, ?)", "seen", "running")
            uncommitted_at_kills |= {int(r[0]) for r in rows}
        else:
            _stop(rig)
        print(f"round {n}: {size} request(s) {'while down' if down else 'live'}, {stop} once {reached} {stage}")
    rig.start_node()
    rig.wait_fulfilled(ids, timeout_s=120)
    wait_until(lambda: rig.states()["confirmed"] == REQUESTS, timeout_s=60, what="every job confirmed")

    assert len(ids) == len(set(ids)) == REQUESTS
    fulfilled = rig.fulfillments()
    assert {i: fulfilled[i] for i in ids} == dict.fromkeys(ids, 1), "a request was delivered twice (or never)"
    txs = rig.node_txs(dev.node_account.address)
    assert [tx["status"] for tx in txs] == [1] * len(txs), "a transaction of the node reverted"
    nonces = [tx["nonce"] for tx in txs]
    assert nonces == list(range(nonces[0], nonces[0] + len(nonces))), "a nonce gap"
    computed = rig.computed()
    assert set(computed) == set(inputs), "an input was never computed"
    by_input = dict(zip(inputs, ids, strict=True))
    again = {by_input[i]: n for i, n in computed.items() if n > 1}
    assert set(again) <= uncommitted_at_kills, f"computed again although its output was committed: {again}"
    assert rig.restarts == SIGKILLS + SIGTERMS
    print(
        f"kill-anywhere ({transport}, seed {seed}): {REQUESTS} requests, {SIGKILLS} SIGKILLs, {SIGTERMS} SIGTERMs,"
        f" {len(txs)} node txs, 0 lost, 0 delivered twice, {len(again)} answer(s) cut by a kill recomputed"
    )
