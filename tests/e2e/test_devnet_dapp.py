"""`infera devnet` as a dApp developer meets it: a stable port, devnet.json, the printed accounts, a dApp script that
knows only the JSON file, and a clean stop."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from eth_account import Account
from web3 import HTTPProvider, Web3

from node.chain.artifacts import load_artifact
from node.devnet import ROOT, free_port, http_ok, port_free, wait_until
from node.devnet.run import DEFAULT_RPC_PORT, choose_rpc_port

pytestmark = pytest.mark.e2e

#: The quickest devnet: the echo container only, no example requests.
ECHO_ONLY = ("--model", "echo", "--no-examples")


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


def _alive_unreaped(pid: int, start: str) -> bool:
    """Whether process `pid` started at `start` still runs (a zombie, dead but not reaped yet, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] == start and fields[0] != "Z"


def _infera_env() -> dict[str, str]:
    """This process's environment with the checkout on PYTHONPATH, for a devnet started from another folder."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _devnet(*argv: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs `infera devnet argv` from `cwd` (the checkout on PYTHONPATH) to its end."""
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "devnet", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_infera_env(),
        timeout=timeout,
        check=False,
    )


def _start_devnet(
    tmp_path: Path, name: str, *argv: str, sigint_ignored: bool = False
) -> tuple[subprocess.Popen[bytes], Path]:
    """Starts `infera devnet argv` in the background, its output in `<tmp_path>/<name>.out`; `sigint_ignored`: as a
    shell's `&` starts it, with SIGINT ignored."""
    log_path = tmp_path / f"{name}.out"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "devnet", *argv],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
        )
    return proc, log_path


def _wait_ready(proc: subprocess.Popen[bytes], log_path: Path) -> None:
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


def _wait_all_gone(children: dict[int, str], port: int) -> None:
    wait_until(
        lambda: not [pid for pid, start in children.items() if _alive_unreaped(pid, start)] and port_free(port),
        timeout_s=30,
        what=f"every process of the devnet to exit and port {port} to be free: {children}",
        interval_s=0.1,
    )


def test_a_dapp_script_reads_devnet_json_and_gets_answers_then_sigterm_stops_everything(tmp_path: Path) -> None:
    """The devnet on a chosen port writes devnet.json once ready; a script that knows only that file asks the
    classifier (through the example consumer) and echo (straight to the Coordinator) from a dev account and reads
    both answers on-chain; SIGTERM then stops every process the devnet started and frees the port."""
    port = free_port()
    out = tmp_path / "dapp" / "devnet.json"
    argv = ["--model", "echo", "--model", "classify", "--port", str(port), "--out", str(out)]
    proc, log_path = _start_devnet(tmp_path, "devnet", *argv, "--workdir", str(tmp_path / "work"))
    try:
        _wait_ready(proc, log_path)
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
        # The Coordinator's ABI is the one the node reads: with every consensus function, event and error it serves.
        coordinator_abi = {(e["type"], e.get("name")) for e in devnet["contracts"]["coordinator"]["abi"]}
        consensus = {(e["type"], e["name"]) for e in load_artifact("IConsensus").abi}
        assert consensus - coordinator_abi == set()
        assert {("function", "requestConsensusInference"), ("event", "ConsensusRequested")} <= consensus
        assert len([e for e in consensus if e[0] == "error"]) >= 10
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
    assert not out.exists()  # it described a chain that is gone
    for model in devnet["models"]:
        assert not http_ok(model["url"] + "/health")


def test_a_taken_port_is_refused_with_one_clear_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _devnet("--once", "--port", str(port), "--workdir", str(tmp_path))
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


def test_the_devnet_runs_from_any_folder_with_a_relative_workdir_and_starts_from_a_fresh_store(
    tmp_path: Path,
) -> None:
    """Started from a folder that is not the checkout, with a relative --workdir whose name has a quote and a
    backslash (TOML's special characters), the devnet's node finds its config; the last run's job store (here: not
    even a database) is removed at start; --once removes devnet.json when it stops."""
    cwd = tmp_path / "elsewhere"
    relative = Path('my "dev\\net"') / "work"
    workdir = cwd / relative
    workdir.mkdir(parents=True)
    (workdir / "node.db").write_bytes(b"the last run's job store, of a chain that is gone")
    port = free_port()
    argv = [*ECHO_ONLY, "--once", "--port", str(port), "--workdir", str(relative)]
    result = _devnet(*argv, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "devnet: done in" in result.stdout
    config = tomllib.loads((workdir / "node.toml").read_text())
    assert config["store"]["path"] == str(workdir / "node.db")
    assert (workdir / "node.db").read_bytes().startswith(b"SQLite format 3\x00")
    assert f"in {workdir / 'devnet.json'}" in result.stdout
    assert not (workdir / "devnet.json").exists()
    assert port_free(port)


def test_a_second_devnet_on_a_held_workdir_is_refused_at_once_and_sighup_stops_the_first(tmp_path: Path) -> None:
    """While a devnet runs, a second one on its work folder refuses with one line naming the first's PID, before
    starting anything, and leaves the first's files alone; SIGHUP (a closed terminal) then stops the first and
    every process it started, and removes its devnet.json."""
    port, other_port = free_port(), free_port()
    workdir = tmp_path / "work"
    first, log_path = _start_devnet(tmp_path, "first", *ECHO_ONLY, "--port", str(port), "--workdir", str(workdir))
    try:
        _wait_ready(first, log_path)
        children = descendants(first.pid)
        assert len(children) >= 3, children  # anvil, echo, the node
        written = {name: (workdir / name).read_bytes() for name in ("devnet.json", "node.toml", "deployment.json")}
        second = _devnet("--once", "--port", str(other_port), "--workdir", str(workdir))
        assert second.returncode == 1, second.stdout + second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"in use by another devnet (PID {first.pid})" in lines[0]
        assert "stop it, or choose another folder with --workdir DIR" in lines[0]
        assert second.stdout == ""
        assert {name: (workdir / name).read_bytes() for name in written} == written
        assert http_ok(json.loads(written["devnet.json"])["node"]["api_url"] + "/readyz")
        first.send_signal(signal.SIGHUP)
        code = first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert code == 130, log_path.read_text()
    _wait_all_gone(children, port)
    assert not (workdir / "devnet.json").exists()


def test_a_sigkilled_devnet_leaves_no_process_behind(tmp_path: Path) -> None:
    """SIGKILL gives the devnet no chance to stop its children: the kernel sends each SIGTERM (PR_SET_PDEATHSIG)."""
    port = free_port()
    argv = [*ECHO_ONLY, "--port", str(port), "--workdir", str(tmp_path / "work")]
    devnet, log_path = _start_devnet(tmp_path, "devnet", *argv)
    try:
        _wait_ready(devnet, log_path)
        children = descendants(devnet.pid)
        assert len(children) >= 3, children  # anvil, echo, the node
    finally:
        devnet.kill()
        devnet.wait()
    _wait_all_gone(children, port)


def test_ctrl_c_stops_a_devnet_started_in_the_background(tmp_path: Path) -> None:
    """A shell's `&` hands the devnet SIGINT ignored; Ctrl-C (SIGINT) must still stop it and every child."""
    port = free_port()
    argv = [*ECHO_ONLY, "--port", str(port), "--workdir", str(tmp_path / "work")]
    devnet, log_path = _start_devnet(tmp_path, "devnet", *argv, sigint_ignored=True)
    try:
        _wait_ready(devnet, log_path)
        children = descendants(devnet.pid)
        devnet.send_signal(signal.SIGINT)
        assert devnet.wait(timeout=60) == 130, log_path.read_text()
    finally:
        if devnet.poll() is None:
            devnet.kill()
            devnet.wait()
    assert "devnet: stopped" in log_path.read_text()
    _wait_all_gone(children, port)


def test_an_unwritable_out_is_refused_with_one_line_before_anything_starts(tmp_path: Path) -> None:
    result = _devnet("--once", "--out", "/sys/devnet.json", "--workdir", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("infera: devnet failed: --out /sys/devnet.json: cannot write there (")
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "anvil.log").exists()


def test_with_two_nodes_a_redundancy_2_request_gets_two_deliveries(tmp_path: Path) -> None:
    """`--nodes 2`: two staked nodes, each its own process and key; a request asking for two nodes' answers, sent by
    a dApp account that knows only devnet.json, gets both."""
    port = free_port()
    out = tmp_path / "devnet.json"
    argv = [*ECHO_ONLY, "--nodes", "2", "--port", str(port), "--out", str(out), "--workdir", str(tmp_path / "work")]
    devnet, log_path = _start_devnet(tmp_path, "devnet", *argv)
    try:
        _wait_ready(devnet, log_path)
        manifest = json.loads(out.read_text())
        nodes = [n["address"] for n in manifest["nodes"]]
        assert len(set(nodes)) == 2
        assert manifest["node"] == manifest["nodes"][0]
        assert nodes[1] not in {a["address"] for a in manifest["accounts"]}  # the dApp accounts stay the dApp's
        assert all(http_ok(n["api_url"] + "/readyz") for n in manifest["nodes"])
        w3 = Web3(HTTPProvider(manifest["rpc_url"]))
        coordinator = w3.eth.contract(
            address=manifest["contracts"]["coordinator"]["address"], abi=manifest["contracts"]["coordinator"]["abi"]
        )
        user = Account.from_key(manifest["accounts"][8]["private_key"])
        (echo,) = manifest["models"]
        fee = manifest["fee_wei"]
        deadline = w3.eth.get_block("latest")["timestamp"] + 3600
        params = (bytes.fromhex(echo["model_id"][2:]), 200_000, 2, deadline, "0x" + "00" * 20, fee)
        tx = coordinator.functions.requestInference(params, b"twice").build_transaction(
            {"from": user.address, "value": 2 * fee, "nonce": w3.eth.get_transaction_count(user.address)}
        )
        receipt = w3.eth.wait_for_transaction_receipt(
            w3.eth.send_raw_transaction(user.sign_transaction(tx).raw_transaction), timeout=60
        )
        assert receipt["status"] == 1
        (created,) = coordinator.events.RequestCreated().process_receipt(receipt)
        request_id = created["args"]["requestId"]
        wait_until(
            lambda: coordinator.functions.getRequest(request_id).call()[3] == 2,  # delivered
            timeout_s=60,
            what=f"two deliveries of request {request_id}",
            interval_s=0.2,
        )
        delivered = coordinator.events.RequestFulfilled().get_logs(
            from_block=manifest["start_block"], argument_filters={"requestId": request_id}
        )
        assert sorted(e["args"]["node"] for e in delivered) == sorted(nodes)
    finally:
        devnet.send_signal(signal.SIGTERM)
        assert devnet.wait(timeout=60) == 130, log_path.read_text()
