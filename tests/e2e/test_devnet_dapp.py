"""`infera devnet` as a dApp developer meets it: a stable port, devnet.json, the printed accounts, a dApp script that
knows only the JSON file, and a clean stop."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from node.devnet import ROOT, free_port, http_ok, port_free, wait_until
from node.devnet.run import DEFAULT_RPC_PORT, choose_rpc_port

pytestmark = pytest.mark.e2e


def _start_time(pid: int) -> str | None:
    """The start time of process `pid` (field 22 of /proc/PID/stat), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (children, their children, …) with its start time, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found and (start := _start_time(child)) is not None:
                found[child] = start
                frontier.append(child)
    return found


def test_a_dapp_script_reads_devnet_json_and_gets_answers_then_sigterm_stops_everything(tmp_path: Path) -> None:
    """The devnet on a chosen port writes devnet.json once ready; a script that knows only that file asks the
    classifier (through the example consumer) and echo (straight to the Coordinator) from a dev account and reads
    both answers on-chain; SIGTERM then stops every process the devnet started and frees the port."""
    port = free_port()
    out = tmp_path / "dapp" / "devnet.json"
    log_path = tmp_path / "devnet.out"
    argv = ["devnet", "--model", "echo", "--model", "classify", "--port", str(port), "--out", str(out)]
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

        wait_until(
            lambda: "devnet: ready in" in log_path.read_text(),
            timeout_s=300,
            what="the devnet's ready line",
            interval_s=0.2,
            alive=alive,
        )
        printed = log_path.read_text()
        devnet = json.loads(out.read_text())
        assert devnet["version"] == 1
        assert devnet["rpc_url"] == f"http://127.0.0.1:{port}"
        assert f"RPC http://127.0.0.1:{port} (chain {devnet['chain_id']})" in printed
        assert f"in {out}" in printed
        # The dApp accounts are printed with their keys, the node's account is named and not offered.
        roles = {a["role"]: a for a in devnet["accounts"]}
        assert [a["index"] for a in devnet["accounts"] if a["role"] == "dapp"] == list(range(2, 10))
        for account in devnet["accounts"][2:]:
            assert f"({account['index']}) {account['address']}  private key {account['private_key']}" in printed
        assert f"{roles['node']['address']} is the node's: send nothing from it" in printed
        assert roles["node"]["address"] == devnet["node"]["address"]
        assert "PUBLIC test keys" in printed
        assert "never for real funds" in devnet["warning"]
        assert {m["key"]: m["examples"] for m in devnet["models"]} == {"echo": [], "classify": ["example_consumer"]}
        wire = {m["key"]: (m["input_abi"], m["output_abi"]) for m in devnet["models"]}
        assert wire == {"echo": ("raw bytes", "raw bytes"), "classify": ("(string)", "(string,uint256)")}
        for model in devnet["models"]:
            assert http_ok(model["url"] + "/health")
        assert http_ok(devnet["node"]["api_url"] + "/readyz")
        assert set(devnet["contracts"]) >= {
            "coordinator",
            "node_registry",
            "subscription_manager",
            "attestation_verifier",
            "reexecution_verifier",
            "example_consumer",
        }
        # The example requests ran before the ready line.
        assert re.search(r"^on-chain result: request \d+ label=positive", printed, re.M), printed
        assert "echo fulfilled, output hash = input hash" in printed

        script = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "e2e" / "dapp_script.py"), str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert script.returncode == 0, script.stdout + script.stderr
        answers = json.loads(script.stdout.strip().splitlines()[-1])
        assert answers["account"] == devnet["accounts"][9]["address"]
        assert answers["sentiment"]["label"] == "positive"
        assert answers["sentiment"]["scoreE6"] > 900_000
        assert answers["echo"]["output_is_input"] is True

        children = descendants(proc.pid)
        assert len(children) >= 4, children  # anvil, two containers, the node
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 130, log_path.read_text()
    assert "devnet: stopped" in log_path.read_text()
    assert [pid for pid, start in children.items() if _start_time(pid) == start] == []
    assert port_free(port)
    for model in devnet["models"]:
        assert not http_ok(model["url"] + "/health")


def test_a_taken_port_is_refused_with_one_clear_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "node.cli", "devnet", "--once", "--port", str(port), "--workdir", str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port} is in use" in lines[0]
    assert "--port N" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "anvil.log").exists()


def test_without_port_the_devnet_takes_8545_or_says_why_not() -> None:
    """With 8545 taken (here, or by anyone already), the devnet picks another port and says so."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", DEFAULT_RPC_PORT))
            holder.listen()
        except OSError:
            pass  # already in use: the same case
        port, note = choose_rpc_port(None)
    assert port != DEFAULT_RPC_PORT
    assert note is not None
    assert f"port {DEFAULT_RPC_PORT} is in use, so anvil listens on {port}" in note
    assert "--port N" in note
