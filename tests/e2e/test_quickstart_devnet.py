"""The quick start to the end, as a new dApp developer walks it: the package installed into a fresh copy of the
quick-start project, the devnet serving the embed model on a chosen port, the developer's own EmbeddingStore deployed
with `forge create` from a printed dev account, asked with `cast send`, and the answer read back with `cast call`.
Each step's wall time is printed (`pytest -s`) for the README and the closing note."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.devnet import ROOT, free_port, tool, wait_until
from tests.quickstart_project import pack, ready_project, run

pytestmark = pytest.mark.e2e


def _logs_of(receipt: dict[str, object], address: str) -> list[dict[str, object]]:
    logs = receipt["logs"]
    assert isinstance(logs, list)
    return [log for log in logs if str(log["address"]).lower() == address.lower()]


def test_own_contract_on_the_devnet_stores_an_embedding_and_a_refusal_reason(
    contracts_built: None, tmp_path: Path
) -> None:
    steps: dict[str, float] = {}
    t0 = time.monotonic()
    project = ready_project(tmp_path, pack(tmp_path))
    run([tool("forge"), "build"], cwd=project)
    steps["npm pack, npm install, forge build"] = time.monotonic() - t0

    port = free_port()
    out = tmp_path / "devnet.json"
    log_path = tmp_path / "devnet.out"
    argv = ["devnet", "--model", "embed", "--no-examples", "--port", str(port), "--out", str(out)]
    t0 = time.monotonic()
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", *argv, "--workdir", str(tmp_path / "work")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:

        def alive() -> None:
            if proc.poll() is not None:
                raise AssertionError(f"devnet exited with {proc.returncode}:\n{log_path.read_text()}")

        wait_until(out.exists, timeout_s=300, what="devnet.json", interval_s=0.2, alive=alive)
        steps["infera devnet --model embed: ready"] = time.monotonic() - t0
        devnet = json.loads(out.read_text())
        rpc = devnet["rpc_url"]
        key = next(a for a in devnet["accounts"] if a["role"] == "dapp")["private_key"]
        coordinator = devnet["contracts"]["coordinator"]["address"]
        (embed,) = [m for m in devnet["models"] if m["key"] == "embed"]
        chain = ["--rpc-url", rpc, "--private-key", key]

        t0 = time.monotonic()
        create = [tool("forge"), "create", "src/EmbeddingStore.sol:EmbeddingStore", *chain, "--broadcast", "--json"]
        created = run([*create, "--constructor-args", coordinator, embed["model_id"]], cwd=project).stdout
        store = json.loads(created[created.index("{") :])["deployedTo"]
        steps["forge create EmbeddingStore"] = time.monotonic() - t0

        def ask(text: str) -> int:
            fee = str(devnet["fee_wei"])
            sent = run(
                [tool("cast"), "send", store, "embed(string)", text, "--value", fee, *chain, "--json"], cwd=project
            )
            receipt = json.loads(sent.stdout)
            assert receipt["status"] in ("0x1", 1), receipt
            (created_log,) = _logs_of(receipt, coordinator)[:1]
            topics = created_log["topics"]
            assert isinstance(topics, list)
            return int(topics[1], 16)  # RequestCreated(uint256 indexed requestId, ...)

        def call(signature: str, *args: str) -> subprocess.CompletedProcess[str]:
            return run([tool("cast"), "call", store, signature, *args, "--rpc-url", rpc], cwd=project, check=False)

        t0 = time.monotonic()
        request_id = ask("The cat sat on the mat")
        answer = wait_until(
            lambda: (r := call("embeddingOf(uint256)(bytes,uint256)", str(request_id))).returncode == 0 and r,
            timeout_s=120,
            what=f"the embedding of request {request_id} in EmbeddingStore",
            interval_s=0.2,
            alive=alive,
        )
        steps["cast send embed(...) until cast call embeddingOf answers"] = time.monotonic() - t0
        int8s, scale = answer.stdout.split()[:2]
        assert len(bytes.fromhex(int8s.removeprefix("0x"))) == 384
        assert int(scale) > 0

        # A text the model cannot read is refused with a reason, which reaches the contract's error handler.
        refused_id = ask("   ")
        reason = wait_until(
            lambda: (r := call("failures(uint256)(string)", str(refused_id))).stdout.strip() not in ('""', "") and r,
            timeout_s=120,
            what=f"the failure reason of request {refused_id}",
            interval_s=0.2,
            alive=alive,
        )
        assert "empty" in reason.stdout or "whitespace" in reason.stdout, reason.stdout
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    print(json.dumps({"quickstart_steps_s": {k: round(v, 1) for k, v in steps.items()}}))
