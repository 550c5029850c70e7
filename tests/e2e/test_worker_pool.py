"""GPU worker pools over MQTT on a real chain: two workers share the jobs, one dies, nothing is lost or doubled."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.devnet import Devnet, wait_until

pytestmark = pytest.mark.e2e

REQUESTS = 100


@pytest.fixture
def dev(contracts_built: None, tmp_path: Path) -> Iterator[Devnet]:
    with Devnet(tmp_path, model_name="echo") as d:
        d.start_anvil()
        d.deploy()
        yield d


def computed(log: Path) -> int:
    return sum(" computed job " in line for line in log.read_text().splitlines())


def test_two_workers_share_the_load_and_survive_one_dying(dev: Devnet) -> None:
    _, broker = dev.start_mosquitto()
    workers = [
        dev.start_container("containers.echo", "--mqtt", broker, "--pool", "gpu", "--delay-ms", "20", name=f"worker{i}")
        for i in range(2)
    ]
    for proc, _ in workers:
        wait_until(
            lambda p=proc: "taking jobs from" in p.log_path.read_text(),
            timeout_s=30,
            what=f"{proc.name} to subscribe",
            alive=proc.check_alive,
        )
    config = dev.write_node_config(
        {"echo": {"transport": "mqtt", "timeout_s": 2, "max_dispatches": 5, "max_concurrency": 64}},
        mqtt_url=broker,
    )
    node = dev.start_node(config)
    nonce_before = dev.w3.eth.get_transaction_count(dev.node_account.address)

    ids = [dev.request_raw("echo", f"job {i}".encode()) for i in range(REQUESTS // 2)]
    (victim, _), (survivor, _) = workers
    wait_until(
        lambda: computed(victim.log_path) > 0 and computed(survivor.log_path) > 0,
        timeout_s=60,
        what="both workers to take jobs",
        alive=node.check_alive,
    )
    victim.popen.send_signal(signal.SIGKILL)  # mid-run: it may hold jobs it will never answer
    victim_computed = computed(victim.log_path)
    ids += [dev.request_raw("echo", f"job {i}".encode()) for i in range(REQUESTS // 2, REQUESTS)]

    wait_until(
        lambda: all(dev.is_fulfilled(i) for i in ids),
        timeout_s=180,
        what=f"all {REQUESTS} requests to be fulfilled",
        interval_s=0.25,
        alive=node.check_alive,
    )

    dep = dev.deployment
    assert dep is not None
    events = dep.coordinator.events.RequestFulfilled().get_logs(from_block=dep.start_block)
    delivered = [e["args"]["requestId"] for e in events]
    assert sorted(delivered) == sorted(ids)  # every request once, none twice
    # Deliveries ready together go out as one deliverBatch: at most one transaction per request.
    assert 1 <= dev.w3.eth.get_transaction_count(dev.node_account.address) - nonce_before <= REQUESTS
    assert victim_computed > 0
    assert computed(survivor.log_path) > 0
    assert victim_computed + computed(survivor.log_path) >= REQUESTS
