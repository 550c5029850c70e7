"""Two node replicas on one real PostgreSQL store, under the leader lease, on a real anvil: the leader killed, the
leader paused past its lease and woken up, and the database stopped mid-load. Every request ends in exactly one
delivery, the key's nonces run without a gap, no delivery reverts, and nothing is sent without the store.

Failover times are printed (`pytest -s`); BENCHMARKS.md has them over repeated runs (bench/failover.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from node.devnet import Proc, wait_until
from tests.faults.conftest import MODEL, FaultRig, fault_rig, readyz

if TYPE_CHECKING:
    from node.devnet.postgres import ThrowawayPostgres

pytestmark = pytest.mark.faults

#: The /v1 API token of the tests' client, on every replica.
TOKEN = "replica-client-token"
TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()

#: The replicas' lease (the smallest the config allows): a standby takes over at most this long after the leader's
#: last renewal, plus its polling interval.
TTL_S = 3.0


@dataclass
class Replica:
    name: str
    proc: Proc
    port: int
    config: Path


def start_replica(rig: FaultRig, name: str, env: dict[str, str] | None = None) -> Replica:
    """`infera run` as replica `name` on the rig's chain, container and PostgreSQL store (its own API port)."""
    dev = rig.dev
    config = dev.write_node_config(
        {MODEL: {"url": rig.container_url, "timeout_s": 10, "max_concurrency": 8}},
        name=f"node-{name}",
        rpc_url=rig.proxy.url,
        ws_url=rig.proxy.url.replace("http://", "ws://"),
        store={"url": rig.store_url, "lease_ttl_s": TTL_S, "replica_name": name},
    )
    port = dev.api_port
    config.write_text(config.read_text() + f'\n[[api.tokens]]\nname = "client"\ntoken_sha256 = "{TOKEN_SHA256}"\n')
    return Replica(name, dev.start_node(config, name=f"node-{name}", env=env), port, config)


def replica_view(port: int) -> dict[str, Any] | None:
    """`/status`'s `replica` (role, lease) of the node on `port`; None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # the starting API (a standby) answers 503 with the same field
        body = json.loads(exc.read())
    except OSError:
        return None
    view = body.get("replica")
    return view if isinstance(view, dict) else None


def wait_role(replica: Replica, role: str, timeout_s: float = 60) -> float:
    """Waits until `replica` reports `role`; returns when (monotonic seconds)."""
    wait_until(
        lambda: (replica_view(replica.port) or {}).get("role") == role,
        timeout_s=timeout_s,
        what=f"replica {replica.name} to be {role}",
        interval_s=0.05,
        alive=replica.proc.check_alive,
    )
    return time.monotonic()


def leader_and_standby(rig: FaultRig, leader_env: dict[str, str] | None = None) -> tuple[Replica, Replica]:
    """Replica `a`, started first, leads; `b`, started once `a` leads, stands by."""
    a = start_replica(rig, "a", env=leader_env)
    wait_role(a, "leader")
    b = start_replica(rig, "b")
    wait_role(b, "standby")
    return a, b


def signal_group(replica: Replica, sig: signal.Signals) -> None:
    os.killpg(replica.proc.popen.pid, sig)


def assert_exactly_once(rig: FaultRig, ids: list[int]) -> None:
    """Each request fulfilled once; every transaction of the node's key succeeded; nonces without a gap."""
    dev = rig.dev
    assert len(ids) == len(set(ids))
    fulfilled = rig.fulfillments()
    assert {i: fulfilled[i] for i in ids} == dict.fromkeys(ids, 1)
    txs = rig.node_txs(dev.node_account.address)
    assert [tx["status"] for tx in txs] == [1] * len(txs), "a transaction reverted"
    nonces = [tx["nonce"] for tx in txs]
    assert nonces == list(range(nonces[0], nonces[0] + len(nonces))), "a nonce gap"
    assert dev.w3.eth.get_transaction_count(dev.node_account.address) == nonces[-1] + 1


@pytest.fixture
def ha(contracts_built: None, tmp_path: Path, postgres: ThrowawayPostgres) -> Iterator[FaultRig]:
    with fault_rig(tmp_path, postgres.new_database()) as rig:
        yield rig


def test_the_standby_takes_over_from_a_killed_leader_and_recomputes_nothing_stored(ha: FaultRig) -> None:
    dev = ha.dev
    a, b = leader_and_standby(ha)
    inputs = [f"ha-{i:03d}".encode() for i in range(200)]
    ids = dev.request_many(MODEL, inputs[:100])
    ha.wait_states("the leader at work", confirmed=30)

    signal_group(a, signal.SIGKILL)
    killed = time.monotonic()
    a.proc.popen.wait()
    dev.procs.remove(a.proc)
    by_id = dict(zip(ids, inputs[:100], strict=True))
    stored = {by_id[int(r[0])] for r in ha.db("SELECT request_id FROM jobs WHERE output IS NOT NULL")}
    ids += dev.request_many(MODEL, inputs[100:])
    failover = wait_role(b, "leader", timeout_s=TTL_S + 30) - killed
    print(f"\nfailover after SIGKILL: {failover:.2f} s (lease_ttl_s = {TTL_S:g})")
    ha.wait_fulfilled(ids, timeout_s=180)
    ha.wait_states("every job confirmed", confirmed=200, timeout_s=60)

    assert_exactly_once(ha, ids)
    computed = ha.computed()
    assert all(computed[i] >= 1 for i in inputs)
    assert {i: computed[i] for i in stored} == dict.fromkeys(stored, 1), "an output the leader stored was recomputed"
    assert failover < TTL_S + 10  # bounded: the lease's end plus the standby's next ask


def test_a_paused_leader_that_wakes_up_sends_nothing_and_steps_down(ha: FaultRig) -> None:
    dev = ha.dev
    a, b = leader_and_standby(ha, leader_env={"INFERA_LOG__LEVEL": "DEBUG"})  # its every send is logged
    inputs = [f"pause-{i:03d}".encode() for i in range(200)]
    ids = dev.request_many(MODEL, inputs[:100])
    ha.wait_states("the leader at work", confirmed=20)

    signal_group(a, signal.SIGSTOP)  # paused mid-run: its lease runs out while it cannot notice
    paused = time.monotonic()
    failover = wait_role(b, "leader", timeout_s=TTL_S + 30) - paused
    print(f"\nfailover after SIGSTOP: {failover:.2f} s (lease_ttl_s = {TTL_S:g})")
    ids += dev.request_many(MODEL, inputs[100:])
    ha.wait_fulfilled(ids, timeout_s=180)
    resumed_at = a.proc.log_path.stat().st_size
    signal_group(a, signal.SIGCONT)
    wait_until(lambda: a.proc.popen.poll() is not None, timeout_s=60, what="the woken leader to step down")
    dev.procs.remove(a.proc)
    after = a.proc.log_path.read_text(errors="replace")[resumed_at:]
    assert a.proc.popen.returncode == 1, after[-3000:]  # LeaseLost: restarted by systemd, it comes back a standby
    assert "lease" in after, after[-3000:]
    assert not re.search(r"\bsent \S+ nonce \d+", after), after[-3000:]  # no new transaction
    ha.wait_states("every job confirmed", confirmed=200, timeout_s=60)
    assert_exactly_once(ha, ids)
    assert (replica_view(b.port) or {}).get("role") == "leader"


def test_no_replica_sends_without_the_store_and_all_is_delivered_once_after_it_returns(
    contracts_built: None, tmp_path: Path
) -> None:
    from node.devnet.postgres import ThrowawayPostgres

    with ThrowawayPostgres() as pg, fault_rig(tmp_path, pg.new_database()) as ha:  # its own cluster: stopped here
        dev = ha.dev
        a, b = leader_and_standby(ha)
        ids = dev.request_many(MODEL, [f"before-{i:02d}".encode() for i in range(40)])
        ha.wait_states("the leader at work", confirmed=10)

        pg.stop()
        stopped = time.monotonic()
        during = dev.request_many(MODEL, [f"during-{i:02d}".encode() for i in range(40)])
        # Down for 20 s: the leader cannot renew, steps down (exit 1) once its lease is over; the standby keeps asking.
        wait_until(
            lambda: a.proc.popen.poll() is not None and time.monotonic() - stopped >= 20,
            timeout_s=60,
            what="the leader to step down, 20 s into the outage",
        )
        assert a.proc.popen.returncode == 1, a.proc.log_tail()
        b.proc.check_alive()  # the standby waits it out, saying why
        assert "does not answer" in readyz(b.port)[1]["problems"][0]
        fulfilled = ha.fulfillments()
        assert [i for i in during if fulfilled[i]] == [], "a request made during the outage was delivered"
        dev.procs.remove(a.proc)

        pg.start()
        a = start_replica(ha, "a")  # as systemd restarts it
        wait_until(
            lambda: "leader" in {(replica_view(r.port) or {}).get("role") for r in (a, b)},
            timeout_s=60,
            what="a leader again",
        )
        ids += during
        ha.wait_fulfilled(ids, timeout_s=180)
        ha.wait_states("every job confirmed", confirmed=len(ids), timeout_s=60)
        assert_exactly_once(ha, ids)
        wait_until(  # one leads, the other stands by
            lambda: sorted(str((replica_view(r.port) or {}).get("role")) for r in (a, b)) == ["leader", "standby"],
            timeout_s=30,
            what="one leader and one standby",
        )


def v1(replica: Replica, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """A call of the replica's /v1 API with the client's token: (status, JSON body)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{replica.port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # a standby's starting API has no /v1 yet: a plain-text 404
        raw = exc.read()
        return exc.code, json.loads(raw) if raw.startswith(b"{") else {}


def test_offchain_jobs_a_killed_leader_accepted_are_answered_and_finished_by_the_next(ha: FaultRig) -> None:
    a, b = leader_and_standby(ha)
    status, done = v1(a, "POST", "/v1/jobs", {"model": MODEL, "input": {"text": "before"}})
    assert status == 202, done
    wait_until(
        lambda: v1(a, "GET", f"/v1/jobs/{done['id']}")[1].get("status") == "completed",
        timeout_s=30,
        what="the first job",
    )
    ha.control("hold")  # the container holds the next calls: the leader dies with them unanswered
    held = [v1(a, "POST", "/v1/jobs", {"model": MODEL, "input": {"text": f"held-{i}"}})[1]["id"] for i in range(3)]
    wait_until(
        lambda: all(v1(a, "GET", f"/v1/jobs/{i}")[1].get("status") == "running" for i in held),
        timeout_s=30,
        what="the held jobs to run",
    )
    signal_group(a, signal.SIGKILL)
    a.proc.popen.wait()
    ha.dev.procs.remove(a.proc)
    ha.control("release")
    wait_role(b, "leader", timeout_s=TTL_S + 30)

    for n, job_id in enumerate(held):  # started again by the new leader, from what the store kept of them
        wait_until(
            lambda job_id=job_id: v1(b, "GET", f"/v1/jobs/{job_id}")[1].get("status") == "completed",
            timeout_s=60,
            what=f"held job {n} on the new leader",
            alive=b.proc.check_alive,
        )
        assert v1(b, "GET", f"/v1/jobs/{job_id}")[1]["output"] == {"echo": f"held-{n}"}
    status, before = v1(b, "GET", f"/v1/jobs/{done['id']}")  # finished on the old leader: its view is kept
    assert (status, before["status"], before["output"]) == (200, "completed", {"echo": "before"})
    assert v1(b, "GET", "/v1/jobs/not-a-job")[0] == 404
