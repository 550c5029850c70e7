"""Failover time of two node replicas on one PostgreSQL store: the leader SIGKILLed, how long until the standby leads
and until the first request made after the kill is delivered.

    python -m bench.failover [--runs 10] [--ttl 3] [--out bench/results/failover.json]

One devnet (anvil, the contracts, the echo container) and one throwaway PostgreSQL cluster for all runs. Each run:
a fresh database, replicas `a` then `b` started (`a` leads, `b` waits), 20 requests delivered, `a` SIGKILLed, one
request sent at once; measured from the kill: `takeover_s` (until `b`'s /status says leader) and `restored_s`
(until that request's RequestFulfilled). The bound is the lease: `lease_ttl_s` after the leader's last renewal
(renewed every ttl/3, so between 2/3 ttl and ttl after the kill), plus the standby's polling interval (ttl/5, at
most 1 s), plus, for `restored_s`, the new leader's start (its nonces, its container check) and one delivery.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak

from node.devnet import Devnet, Proc, forge_build, wait_until
from node.devnet.postgres import ThrowawayPostgres

MODEL = "echo/bench@1"


def role(port: int) -> str | None:
    """The `replica.role` in /status of the node on `port` (its starting API answers 503 with it); None if down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
    except OSError:
        return None
    return (body.get("replica") or {}).get("role")


def fulfilled(dev: Devnet, rid: int) -> bool:
    """Whether the coordinator emitted RequestFulfilled for request `rid`."""
    assert dev.deployment is not None
    topic = "0x" + keccak(text="RequestFulfilled(uint256,address,bytes32,bool,uint256)").hex()
    logs = dev.w3.eth.get_logs(
        {
            "address": dev.deployment.coordinator.address,
            "topics": [topic, "0x" + rid.to_bytes(32, "big").hex()],
            "fromBlock": dev.deployment.start_block,
        }
    )
    return bool(logs)


def replica(dev: Devnet, echo_url: str, url: str, name: str, ttl_s: float) -> tuple[Proc, int]:
    """Starts replica `name` on the store at `url` (its own config and API port); returns it and its port."""
    config = dev.write_node_config(
        {MODEL: {"url": echo_url, "timeout_s": 10}},
        name=f"{name}-{time.monotonic_ns()}",
        store={"url": url, "lease_ttl_s": ttl_s, "replica_name": name},
    )
    port = dev.api_port
    return dev.start_node(config, name=config.stem), port


def one_run(dev: Devnet, pg: ThrowawayPostgres, echo_url: str, ttl_s: float) -> dict[str, float]:
    """One failover on a fresh database: `takeover_s` and `restored_s` from the leader's SIGKILL (seconds)."""
    url = pg.new_database()
    a, a_port = replica(dev, echo_url, url, "a", ttl_s)
    wait_until(lambda: role(a_port) == "leader", timeout_s=60, what="a to lead", alive=a.check_alive)
    b, b_port = replica(dev, echo_url, url, "b", ttl_s)
    wait_until(lambda: role(b_port) == "standby", timeout_s=60, what="b to stand by", alive=b.check_alive)
    dev.request_many(MODEL, [f"warm-{i}".encode() for i in range(20)])
    os.killpg(a.popen.pid, signal.SIGKILL)
    killed = time.monotonic()
    a.popen.wait()
    dev.procs.remove(a)
    rid = dev.request_raw(MODEL, b"after the kill")
    took = wait_until(
        lambda: time.monotonic() if role(b_port) == "leader" else None,
        timeout_s=ttl_s + 60,
        what="b to lead",
        interval_s=0.02,
        alive=b.check_alive,
    )
    restored = wait_until(
        lambda: time.monotonic() if fulfilled(dev, rid) else None,
        timeout_s=ttl_s + 60,
        what="the request after the kill to be delivered",
        interval_s=0.02,
        alive=b.check_alive,
    )
    dev.stop(b)
    return {"takeover_s": round(took - killed, 3), "restored_s": round(restored - killed, 3)}


def summary(values: list[float]) -> dict[str, float]:
    """p50, max and min of `values`."""
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 3), "max": ordered[-1], "min": ordered[0]}


def main() -> None:
    """`python -m bench.failover`: the runs, printed and written to `--out`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=3.0, help="store.lease_ttl_s of both replicas (s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/failover.json"))
    args = parser.parse_args()
    forge_build()
    runs: list[dict[str, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="infera-failover-") as tmp,
        ThrowawayPostgres() as pg,
        Devnet(Path(tmp), model_name=MODEL) as dev,
    ):
        dev.start_anvil()
        dev.deploy()
        _, echo_url = dev.start_container("containers.echo", name="echo")
        for n in range(args.runs):
            runs.append(one_run(dev, pg, echo_url, args.ttl))
            print(f"run {n + 1}: {runs[-1]}", file=sys.stderr)
    result: dict[str, Any] = {
        "command": " ".join(["python -m bench.failover", *sys.argv[1:]]),
        "lease_ttl_s": args.ttl,
        "runs": len(runs),
        "takeover_s": summary([r["takeover_s"] for r in runs]),
        "restored_s": summary([r["restored_s"] for r in runs]),
        "each": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
