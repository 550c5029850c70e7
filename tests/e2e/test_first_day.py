"""An operator's first-day mistakes, on a real anvil with real node processes: each is refused, or named with what
to do, and never harms the node that already runs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.devnet import ROOT, Devnet, Proc, dev_account, free_port, wait_until
from node.jobs.store import JobStore
from tests.e2e.test_cli import infera
from tests.faults.conftest import readyz

pytestmark = pytest.mark.e2e

MODEL = "echo"


@dataclass
class Running:
    dev: Devnet
    node: Proc
    config: Path
    api_port: int
    echo_url: str


@pytest.fixture(scope="module")
def running(contracts_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """anvil, the contracts, the echo container and one node process (dev account 1), ready."""
    with Devnet(tmp_path_factory.mktemp("first-day"), model_name=MODEL) as dev:
        dev.start_anvil()
        dev.deploy()
        _, url = dev.start_container("containers.echo")
        config = dev.write_node_config({MODEL: url})
        port = dev.api_port
        node = dev.start_node(config)
        wait_until(lambda: ready(port), timeout_s=60, what="the node's /readyz", alive=node.check_alive)
        yield Running(dev, node, config, port, url)


def ready(port: int) -> bool:
    """Whether the node's /readyz answers 200 (False while nothing listens yet)."""
    try:
        return readyz(port)[0] == 200
    except OSError:
        return False


def infera_run(config: Path, key: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """`infera run --config CONFIG` with `key` as its node key, to its end (a refused start ends at once)."""
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "INFERA_PRIVATE_KEY": key},
        timeout=timeout_s,
        check=False,
    )


def error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one `infera: …` line of a refused command (exit `code`: 1, or 2 for a config mistake)."""
    assert result.returncode == code, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("infera: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def still_serves(r: Running, text: bytes) -> None:
    """The first node is ready and delivers a new request."""
    assert r.node.popen.poll() is None
    assert readyz(r.api_port)[0] == 200
    request_id = r.dev.request_raw(MODEL, text)
    wait_until(
        lambda: r.dev.is_fulfilled(request_id), timeout_s=60, what="the first node's delivery", alive=r.node.check_alive
    )


def test_a_second_node_on_the_same_store_or_key_is_refused_and_the_first_goes_on(running: Running) -> None:
    key = running.dev.private_key_hex()
    pid = running.node.popen.pid
    store = running.config.with_suffix(".db")

    same = error_line(infera_run(running.config, key))
    assert f"store.path {store} is in use by another infera node (PID {pid} on host {socket.gethostname()}" in same
    assert "stop that node first, or give this one its own [store] path" in same
    still_serves(running, b"after a second node on its store")

    other_store = running.dev.write_node_config({MODEL: running.echo_url}, name="copy")  # its own store and port
    same_key = error_line(infera_run(other_store, key))
    address = running.dev.node_account.address
    assert f"key {address} on {running.dev.rpc_url} is in use by another infera node (PID {pid} " in same_key
    assert "take each other's nonces" in same_key
    assert not other_store.with_suffix(".db").exists()  # refused before it opened anything
    still_serves(running, b"after a second node with its key")


def test_a_taken_api_port_is_named_with_what_to_do(running: Running) -> None:
    config = running.dev.write_node_config({MODEL: running.echo_url}, name="port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config.write_text(config.read_text().replace(f"port = {running.dev.api_port}\n", f"port = {port}\n"))
        line = error_line(infera_run(config, dev_account(5).key.hex()), code=2)  # a config mistake: not restarted
    assert line == (
        f"infera: config error: api.port: 127.0.0.1:{port} is already in use (by another infera node?): choose another"
        f" port in [api] port, or stop what holds it (`ss -ltnp 'sport = :{port}'` names it)"
    )
    assert "OSError" not in line
    still_serves(running, b"after a node on a taken port")


def test_readyz_of_a_node_with_two_confirmations_shows_no_lag_once_caught_up(running: Running) -> None:
    dev = running.dev
    config = dev.write_node_config({MODEL: running.echo_url}, name="deep", confirmations=2)
    node = dev.start_node(config, env={"INFERA_PRIVATE_KEY": dev_account(6).key.hex()}, name="deep")
    port = dev.api_port
    try:
        for _ in range(3):
            dev.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
            head = dev.w3.eth.block_number

            def caught_up(head: int = head) -> dict[str, object] | None:
                try:
                    _, body = readyz(port)
                except OSError:
                    return None
                return body if body.get("head") == head and body.get("lag_blocks") == 0 else None

            # Handed on up to head - 2 (live over its WebSocket; the cursor follows at the next read back): no lag.
            body = wait_until(caught_up, timeout_s=30, what=f"no lag at head {head}", alive=node.check_alive)
            assert int(body["cursor"]) <= head - 1  # type: ignore[call-overload]  # never past the confirmed head
            assert not any("blocks behind" in p for p in body["problems"]), body  # type: ignore[attr-defined]
    finally:
        dev.stop(node)


def test_request_with_the_models_container_down_sends_nothing_unless_told_raw(running: Running) -> None:
    dev = running.dev
    dead = f"http://127.0.0.1:{free_port()}"
    config = dev.write_node_config({MODEL: dead}, name="asker")  # the operator's config: its container is not up
    payer = {"USER_KEY": dev.user.key.hex()}
    args = ("request", "--config", str(config), "--model", MODEL, "--input", "hello raw", "--key-env", "USER_KEY")
    nonce = dev.w3.eth.get_transaction_count(dev.user.address)

    line = error_line(infera(*args, env=payer))
    assert line.startswith(f"infera: the 'echo' container at {dead} does not answer (")
    assert "so the input cannot be encoded with its ABI and nothing was sent" in line
    assert "pass --raw to send the text as UTF-8 bytes on purpose" in line
    assert dev.w3.eth.get_transaction_count(dev.user.address) == nonce  # no transaction
    hexed = error_line(infera(*args[:5], "--input-json", '{"text": "x"}', *args[7:], env=payer))
    assert f"the 'echo' container at {dead} does not answer" in hexed
    assert "--input-hex" in hexed
    assert dev.w3.eth.get_transaction_count(dev.user.address) == nonce

    sent = infera(*args, "--raw", "--timeout", "60", env=payer)  # on purpose: the running node's echo answers
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sent.stdout == "hello raw\n"
    assert dev.w3.eth.get_transaction_count(dev.user.address) == nonce + 1


def stored_state(r: Running, request_id: int) -> str | None:
    """The job's state in the first node's store (read while it runs)."""
    assert r.dev.deployment is not None
    store = JobStore(r.config.with_suffix(".db"), chain_id=31337, coordinator=r.dev.deployment.coordinator.address)
    try:
        record = store.record(request_id)
        return None if record is None else str(record.job.state)
    finally:
        store.close()


def test_jobs_show_decodes_with_the_models_abi_and_says_when_it_cannot(running: Running) -> None:
    dev = running.dev
    request_id = dev.request_raw(MODEL, "héllo show".encode())
    wait_until(lambda: stored_state(running, request_id) == "confirmed", timeout_s=60, what="the job to settle")
    config = str(running.config)

    text = infera("jobs", "show", str(request_id), "--config", config)
    assert text.returncode == 0, text.stderr
    lines = {line[:17].strip(): line[17:].strip() for line in text.stdout.splitlines()}
    assert (lines["input"], lines["output"]) == ("héllo show", "héllo show")
    assert lines["decoded"] == f"with the ABI the 'echo' container ({running.echo_url}) declares"
    assert "input_hex" not in lines
    assert re.fullmatch(r"\d\.?\d* ETH \(\d+ wei\)", lines["fee_per_node"]), lines
    for key in ("deadline", "created", "updated"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[key]), (key, lines[key])

    shown = json.loads(infera("jobs", "show", str(request_id), "--config", config, "--json").stdout)
    assert shown["input_hex"] == "0x" + "héllo show".encode().hex()  # the raw fields stay
    assert isinstance(shown["created_at"], float)
    assert (shown["input"], shown["output"]) == ("héllo show", "héllo show")  # the decoded ones beside them
    assert shown["created_at_utc"] == lines["created"]
    assert shown["fee_per_node"].endswith(f" ({shown['fee_per_node_wei']} wei)")

    # The container is down (here: the config names a port nothing listens on): the hex, and why.
    dead = f"http://127.0.0.1:{free_port()}"
    down = running.config.with_name("down.toml")
    down.write_text(running.config.read_text().replace(running.echo_url, dead))
    text = infera("jobs", "show", str(request_id), "--config", str(down))
    assert text.returncode == 0, text.stderr
    lines = {line[:17].strip(): line[17:].strip() for line in text.stdout.splitlines()}
    assert lines["input_hex"] == shown["input_hex"]
    assert "input" not in lines
    assert lines["decoded"].startswith(f"no: the 'echo' container at {dead} does not answer (")
    assert lines["decoded"].endswith("so its ABI is not known")
    shown = json.loads(infera("jobs", "show", str(request_id), "--config", str(down), "--json").stdout)
    assert "input" not in shown
    assert shown["decoded"] == lines["decoded"]


# ------------------------------------------------------------------------------------------------ review findings


def test_a_command_sending_from_a_key_a_node_holds_is_refused_naming_it_even_with_no_api(running: Running) -> None:
    dev = running.dev
    quiet = dev.write_node_config({MODEL: running.echo_url}, name="no-api")  # its API off: no port to probe
    quiet.write_text(re.sub(r"(?m)^port = \d+$", "port = 0", quiet.read_text()))
    key = {"INFERA_PRIVATE_KEY": dev.private_key_hex()}  # the running node's key
    address = dev.node_account.address
    nonce = dev.w3.eth.get_transaction_count(address)
    pid = running.node.popen.pid
    for args in (
        ("request", "--config", str(quiet), "--model", MODEL, "--input", "hi", "--raw"),
        ("node", "stake", "--config", str(quiet), "--amount", "0.01eth"),
        ("node", "claim", "--config", str(quiet)),
    ):
        line = error_line(infera(*args, env=key))
        assert line.startswith(f"infera: key {address} is held by a running infera node (PID {pid} on host "), line
        assert line.endswith("sign with another key (--key-env NAME), stop that node first, or pass --force")
    assert dev.w3.eth.get_transaction_count(address) == nonce  # nothing was sent
    status = infera("node", "status", "--config", str(quiet), env=key)  # reading needs no lock
    assert status.returncode == 0, status.stderr
    still_serves(running, b"after commands refused its key")


def test_a_key_listed_twice_in_wallet_is_named_by_config_check_and_run(running: Running) -> None:
    dev = running.dev
    twice = dev.write_node_config({MODEL: running.echo_url}, name="twice", extra_key_envs=["K2"])
    key = dev_account(7).key.hex()
    env = {"INFERA_PRIVATE_KEY": key, "K2": key}
    expected = (
        f"key {dev_account(7).address} is listed twice in [wallet] (INFERA_PRIVATE_KEY, K2): a node sends from each"
        " of its keys once; remove the repeat"
    )
    check = infera("config", "check", "--config", str(twice), env=env)
    assert check.returncode == 1, check.stdout
    assert f"infera: {twice}: {expected}" in check.stderr.splitlines()
    run = subprocess.run(
        [sys.executable, "-m", "node.cli", "run", "--config", str(twice)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )
    assert error_line(run, code=2) == f"infera: config error: {expected}"
    assert "in use by another infera node" not in run.stderr


def test_jobs_show_escapes_a_requesters_text_and_says_when_bytes_do_not_decode(running: Running) -> None:
    dev = running.dev
    forged = "ok\ndecoded           with the ABI\x1b]0;pwned\x07\x1b[2J"
    shown = dev.request_raw(MODEL, forged.encode())
    wait_until(lambda: stored_state(running, shown) == "confirmed", timeout_s=60, what="the forged job to settle")
    text = infera("jobs", "show", str(shown), "--config", str(running.config))
    assert text.returncode == 0, text.stderr
    assert "\x1b" not in text.stdout
    assert [line for line in text.stdout.splitlines() if line.startswith("decoded")] == [
        f"decoded           with the ABI the 'echo' container ({running.echo_url}) declares"
    ]  # no forged line
    assert "ok\\ndecoded           with the ABI\\x1b]0;pwned\\x07\\x1b[2J" in text.stdout

    raw = dev.request_raw(MODEL, b"\xff\xfe not utf-8")
    wait_until(
        lambda: stored_state(running, raw) in ("confirmed", "failed"), timeout_s=60, what="the binary job to settle"
    )
    text = infera("jobs", "show", str(raw), "--config", str(running.config))
    lines = {line[:17].strip(): line[17:].strip() for line in text.stdout.splitlines()}
    assert lines["input_hex"] == "0x" + b"\xff\xfe not utf-8".hex()
    assert lines["decoded"].startswith("input not UTF-8 text: shown as hex")
    body = json.loads(infera("jobs", "show", str(raw), "--config", str(running.config), "--json").stdout)
    assert body["input_decoded"] is False
    assert body["input"] == body["input_hex"]


def test_a_misspelt_model_gets_one_line_with_the_model_meant(running: Running) -> None:
    payer = {"USER_KEY": running.dev.user.key.hex()}
    result = infera(
        "request", "--config", str(running.config), "-m", "ecoh", "--input", "hi", "--key-env", "USER_KEY", env=payer
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "infera: --model 'ecoh' is not in this config's [[models]]; did you mean 'echo'? (a model only other nodes"
        " serve: pass --raw or --input-hex; nothing was sent)"
    ]
