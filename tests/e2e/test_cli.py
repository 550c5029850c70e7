"""The `infera` command as an operator meets it: bad config, dead RPC, and the one-command devnet."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from web3 import HTTPProvider, Web3

from node.devnet import ROOT, _http_ok, dev_account, free_port, wait_until

pytestmark = pytest.mark.e2e

GOOD_CHAIN = '[chain]\nrpc_url = "{rpc}"\ncoordinator_address = "0x5FbDB2315678afecb367f032d93F642f64180aa3"\n'
MODELS = '\n[[models]]\nname = "echo"\nurl = "http://127.0.0.1:3000"\n'


def infera(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def run_with(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return infera("run", "--config", str(path), env=env)


def test_misspelled_key_stops_the_node_with_one_line(tmp_path: Path) -> None:
    result = run_with(tmp_path, GOOD_CHAIN.format(rpc="http://127.0.0.1:1") + "rpc_ulr = 'x'\n" + MODELS)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "config error" in lines[0]
    assert "chain.rpc_ulr: unknown key" in lines[0]


def test_missing_key_is_named(tmp_path: Path) -> None:
    result = run_with(tmp_path, '[chain]\nrpc_url = "http://127.0.0.1:1"\n' + MODELS)
    assert result.returncode == 2
    assert "chain.coordinator_address: Field required" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_key_env_is_named_and_no_secret_is_printed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "INFERA_PRIVATE_KEY"}
    path = tmp_path / "node.toml"
    path.write_text(GOOD_CHAIN.format(rpc="http://127.0.0.1:1") + MODELS)
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "wallet.private_key_env: env variable INFERA_PRIVATE_KEY is not set" in result.stderr


def test_invalid_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    secret = "not-a-key-but-secret-" + "ab" * 10
    result = run_with(
        tmp_path, GOOD_CHAIN.format(rpc="http://127.0.0.1:1") + MODELS, env={"INFERA_PRIVATE_KEY": secret}
    )
    assert result.returncode == 2
    assert "does not hold a valid private key" in result.stderr
    assert secret not in result.stderr + result.stdout


def test_dead_rpc_at_start_is_named_and_waited_out(tmp_path: Path) -> None:
    """An RPC outage never stops the node, not even at start: it says which URL is dead and keeps trying."""
    rpc = f"http://127.0.0.1:{free_port()}"
    key = dev_account(1).key.hex()
    path = tmp_path / "node.toml"
    path.write_text(GOOD_CHAIN.format(rpc=rpc) + f'[api]\nport = 0\n[store]\npath = "{tmp_path}/n.db"\n' + MODELS)
    log_path = tmp_path / "node.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "run", "--config", str(path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "INFERA_PRIVATE_KEY": key},
        )
    try:
        wait_until(
            lambda: log_path.read_text().count(f"chain.rpc_url: cannot reach {rpc}") >= 2,
            timeout_s=60,
            what="the node to retry the dead RPC",
        )
        assert proc.poll() is None, "a dead RPC must not stop the node"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    assert key not in log_path.read_text()


def test_devnet_once_prints_the_answer_and_stops_everything(tmp_path: Path) -> None:
    result = infera("devnet", "--once", "--workdir", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"^on-chain result: request (\d+) label=(\w+) scoreE6=(\d+)", result.stdout, re.M)
    assert match, result.stdout
    assert match.group(2) == "positive"
    llm = re.search(r"^on-chain result: request \d+ spam=(yes|no); request \d+ score=(\d+)/10$", result.stdout, re.M)
    assert llm, result.stdout
    assert 1 <= int(llm.group(2)) <= 10
    # Every process it started is gone: its anvil and its containers no longer answer.
    rpc = re.search(r"anvil on (http://127\.0\.0\.1:\d+)", result.stdout)
    containers = re.findall(r"container ready on (http://127\.0\.0\.1:\d+)", result.stdout)
    assert rpc
    assert len(containers) == 2
    for url in containers:
        assert not _http_ok(url + "/health")
    assert not Web3(HTTPProvider(rpc.group(1), request_kwargs={"timeout": 2})).is_connected()


def test_devnet_serves_the_packaged_smollm2_through_the_generate_container(tmp_path: Path) -> None:
    """`--model generate`: the packaged SmolLM2 GGUF, written once as a checkpoint, answers the PromptConsumer."""
    port = str(free_port())
    result = infera("devnet", "--once", "--model", "generate", "--port", port, "--workdir", str(tmp_path), timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    reply = re.search(r"^on-chain result: request \d+ text=(.+)$", result.stdout, re.M)
    assert reply, result.stdout
    assert "Paris" in json.loads(reply.group(1))  # greedy: "The capital of France is" -> " Paris. ..."
    assert (tmp_path / "models" / "smollm2-135m-instruct" / "config.json").is_file()
    assert f"anvil on http://127.0.0.1:{port} " in result.stdout
    assert re.search(
        r"^devnet: PromptConsumer 0x[0-9a-fA-F]{40} asks generate/smollm2-135m-instruct@1:", result.stdout, re.M
    )
    assert f"in {tmp_path / 'devnet.json'}" in result.stdout
    assert not (tmp_path / "devnet.json").exists()  # it described the chain --once stopped


def test_devnet_refuses_a_model_it_does_not_have_before_starting_anything(tmp_path: Path) -> None:
    result = infera("devnet", "--once", "--model", "llm", "--model", "gpt-9", "--workdir", str(tmp_path), timeout=60)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "infera: devnet failed: unknown model gpt-9: choose from classify, llm, embed, generate, echo"
    )
    assert not (tmp_path / "anvil.log").exists()
