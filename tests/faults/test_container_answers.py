"""What a container answers cannot stop the node or make it spin, and Infernet's containers run unchanged: a 429 is
waited out and delivered, Infernet's answer shapes are delivered exactly as Infernet's node delivers them, a node
serving only containers without `/health` is ready, and a seeded random mix of bad answers ends every request in one
on-chain callback after a bounded number of calls."""

from __future__ import annotations

import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak

from containers.runtime.wire import chain_request
from node.devnet import _http_ok, free_port, wait_until
from node.jobs.scheduler import MAX_FAILURE_CHARS
from tests.faults.conftest import FaultRig, readyz
from tests.faults.infernet_containers import EVERY_BAD, FINAL, hello_answer, llm_answer, script

pytestmark = pytest.mark.faults


def start_container(rig: FaultRig, kind: str, seed: int = 0) -> tuple[str, Path]:
    """Starts a container of tests/faults/infernet_containers.py; returns its URL and its journal."""
    port, journal = free_port(), rig.dev.workdir / f"{kind}.journal"
    argv = ["--kind", kind, "--port", str(port), "--journal", str(journal), "--seed", str(seed)]
    proc = rig.dev.start(kind, [sys.executable, "-m", "tests.faults.infernet_containers", *argv])
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _http_ok(url + "/"), timeout_s=30, what=f"the {kind} container", alive=proc.check_alive)
    return url, journal


def configure(rig: FaultRig, models: dict[str, str | dict[str, Any]]) -> None:
    rig.config = rig.dev.write_node_config(
        models, rpc_url=rig.proxy.url, ws_url=rig.proxy.url.replace("http://", "ws://")
    )


def calls(journal: Path) -> Counter[bytes]:
    """Calls the container answered, by input."""
    if not journal.exists():
        return Counter()
    return Counter(bytes.fromhex(line.split()[0]) for line in journal.read_text().splitlines())


def output_hashes(rig: FaultRig) -> dict[int, bytes]:
    dep = rig.dev.deployment
    assert dep is not None
    return {
        int(e["args"]["requestId"]): bytes(e["args"]["outputHash"])
        for e in dep.coordinator.events.RequestFulfilled().get_logs(from_block=dep.start_block)
    }


def failures(rig: FaultRig) -> tuple[dict[int, list[str]], Counter[int]]:
    """FailureReported reasons and RequestFailed counts, by request id."""
    dep = rig.dev.deployment
    assert dep is not None
    reported: dict[int, list[str]] = {}
    for e in dep.coordinator.events.FailureReported().get_logs(from_block=dep.start_block):
        reported.setdefault(int(e["args"]["requestId"]), []).append(str(e["args"]["reason"]))
    failed = Counter(
        int(e["args"]["requestId"]) for e in dep.coordinator.events.RequestFailed().get_logs(from_block=dep.start_block)
    )
    return reported, failed


def hello_output(input_: bytes) -> bytes:
    """What Infernet's node delivers for its hello-world container: abi.encode(string(str(answer)))."""
    return encode(["string"], [str(hello_answer(chain_request(input_)))])


def llm_output(input_: bytes) -> bytes:
    """What Infernet's node delivers for a five-key answer: abi.encode(bytes raw_output, bytes processed_output)."""
    answer = llm_answer(chain_request(input_))
    return encode(["bytes", "bytes"], [bytes.fromhex(answer["raw_output"]), bytes.fromhex(answer["processed_output"])])


def test_a_429_once_is_waited_out_and_delivered_not_failed(rig: FaultRig) -> None:
    url, journal = start_container(rig, "ratelimit")
    configure(rig, {"infernet/llm@1": {"url": url, "max_attempts": 3, "retry_backoff_s": 0.1, "timeout_s": 5}})
    rig.start_node()
    input_ = encode(["string"], ["rate me"])
    asked = time.monotonic()
    (rid,) = rig.dev.request_many("infernet/llm@1", [input_])
    wait_until(lambda: rid in output_hashes(rig), timeout_s=60, what="the delivery", alive=rig.node.check_alive)  # type: ignore[union-attr]
    took = time.monotonic() - asked
    print(f"429 once (Retry-After: 1): delivered {took:.2f} s after the request")
    assert output_hashes(rig)[rid] == keccak(llm_output(input_))
    assert failures(rig) == ({}, Counter())
    assert calls(journal)[input_] == 2
    assert took >= 1.0  # it waited as the container asked (backoff alone would have been 0.1 s)


def test_infernet_containers_are_delivered_as_infernets_node_delivers_and_ready_without_health(
    rig: FaultRig,
) -> None:
    hello_url, _ = start_container(rig, "hello")
    llm_url, _ = start_container(rig, "llm")
    for url in (hello_url, llm_url):
        assert not _http_ok(url + "/health")  # like Infernet's containers: no /health
    configure(rig, {"infernet/hello@1": {"url": hello_url}, "infernet/llm@1": {"url": llm_url}})
    rig.start_node()
    node = rig.node
    assert node is not None
    wait_until(lambda: readyz(rig.dev.api_port)[0] == 200, timeout_s=30, what="/readyz 200", alive=node.check_alive)

    inputs = [encode(["string"], [f"prompt {i}"]) for i in range(3)]
    hello_ids = rig.dev.request_many("infernet/hello@1", inputs)
    llm_ids = rig.dev.request_many("infernet/llm@1", inputs)
    wait_until(
        lambda: set(hello_ids + llm_ids) <= output_hashes(rig).keys(),
        timeout_s=60,
        what="every delivery",
        alive=node.check_alive,
    )
    hashes = output_hashes(rig)
    for input_, h, m in zip(inputs, hello_ids, llm_ids, strict=True):
        assert hashes[h] == keccak(hello_output(input_))
        assert hashes[m] == keccak(llm_output(input_))
    status, body = readyz(rig.dev.api_port)
    assert status == 200, body
    assert body["containers"] == {"infernet/hello@1": True, "infernet/llm@1": True}


MAX_ATTEMPTS = 4


def expected(steps: list[str]) -> tuple[str, int]:
    """What the node must make of a script: ("delivered" | "failed", calls made), with `MAX_ATTEMPTS`."""
    for n, answer in enumerate(steps, start=1):
        if answer.startswith("good-"):
            return "delivered", n
        if answer in FINAL or n >= MAX_ATTEMPTS:
            return "failed", n
    raise AssertionError(steps)


def test_a_random_mix_of_bad_answers_ends_every_request_in_one_callback_after_bounded_calls(rig: FaultRig) -> None:
    seed = int(os.environ.get("INFERA_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    print(f"container answer fuzzing: seed {seed} (rerun with INFERA_FUZZ_SEED={seed})")
    rig.env["PYTHONFAULTHANDLER"] = "1"  # a crash of the node shows where in its log
    url, journal = start_container(rig, "fuzz", seed)
    model = "fuzz/answers@1"
    configure(
        rig,
        {
            model: {
                "url": url,
                "max_attempts": MAX_ATTEMPTS,
                "retry_backoff_s": 0.1,
                "timeout_s": 3,
                "max_concurrency": 8,
            }
        },
    )
    rig.start_node()
    node = rig.node
    assert node is not None
    inputs = [encode(["string"], [f"fuzz-{i}"]) for i in range(60)]  # the first len(EVERY_BAD) cover each kind
    scripts = {i: script(seed, i) for i in inputs}
    kinds = Counter(k for s in scripts.values() for k in s)
    assert set(EVERY_BAD) <= kinds.keys()
    print("answer kinds:", dict(kinds))
    ids = dict(zip(inputs, rig.dev.request_many(model, inputs), strict=True))

    def settled() -> bool:
        reported, _ = failures(rig)
        done = output_hashes(rig).keys() | reported.keys()
        return set(ids.values()) <= done

    started = time.monotonic()
    wait_until(settled, timeout_s=240, what="every request settled", interval_s=0.5, alive=node.check_alive)
    print(f"all {len(inputs)} settled in {time.monotonic() - started:.1f} s")
    outcomes = Counter(expected(s)[0] for s in scripts.values())
    rig.wait_states("the store to agree", confirmed=outcomes["delivered"], failed=outcomes["failed"])

    hashes, (reported, failed) = output_hashes(rig), failures(rig)
    made = calls(journal)
    for input_, rid in ids.items():
        outcome, n = expected(scripts[input_])
        ended = int(rid in hashes) + len(reported.get(rid, []))
        assert ended == 1, (seed, scripts[input_], rid in hashes, reported.get(rid))  # exactly one settlement
        assert made[input_] == n, (seed, scripts[input_], made[input_])  # bounded, and exactly what was due
        if outcome == "delivered":
            good = scripts[input_][n - 1]
            shapes: dict[str, Callable[[bytes], bytes]] = {"good-hello": hello_output, "good-llm": llm_output}
            want = shapes[good](input_) if good in shapes else input_  # good-abi: Infera's, the input echoed
            assert hashes[rid] == keccak(want), (seed, scripts[input_])
        else:
            assert rid not in hashes, (seed, scripts[input_])
            (reason,) = reported[rid]
            assert 0 < len(reason) <= MAX_FAILURE_CHARS, reason
            # the devnet's minFailureReports is 1: the node's one report fails the request, RequestFailed once
            assert failed[rid] <= 1
    node.check_alive()
    per_request = sorted(made[i] for i in inputs)
    print(
        f"container calls per request: max {per_request[-1]}, mean {sum(per_request) / len(per_request):.2f} "
        f"(max_attempts {MAX_ATTEMPTS}); delivered {len(hashes)}, failure reports {len(reported)}"
    )


def test_retries_stop_when_the_chain_passes_the_deadline_whatever_the_machines_clock_says(rig: FaultRig) -> None:
    rig.configure(model={"max_attempts": 3, "retry_backoff_s": 2.0})
    rig.start_node()
    node = rig.node
    assert node is not None
    rig.control("hold")
    (rid,) = rig.dev.request_many("echo/faulty@1", [b"fail500-late"])
    rig.wait_states("the call in the container", running=1)
    # The chain moves 31 days on (past the 30-day deadline); the machine's clock does not.
    rig.dev.w3.provider.make_request("evm_increaseTime", [31 * 86400])  # type: ignore[arg-type]
    rig.dev.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    head = rig.dev.w3.eth.block_number
    wait_until(
        lambda: (readyz(rig.dev.api_port)[1].get("head") or 0) >= head, timeout_s=30, what="the node to see the head"
    )
    rig.control("release")
    wait_until(
        lambda: rig.db("SELECT state FROM jobs WHERE request_id = ?", str(rid))[0][0] in ("failed", "expired"),
        timeout_s=30,
        what="the job to end",
        alive=node.check_alive,
    )
    assert rig.computed()[b"fail500-late"] == 1  # no retry past the chain's deadline (3 attempts by the machine's)
    assert rig.fulfillments()[rid] == 0
