"""The operator's `infera` commands on a real anvil devnet: deploy, node stake, request, jobs, keys, config check.

Every command runs as a subprocess, the way an operator types it; each check is what the operator would look at
(the printed stake, answer, error line and exit code). No output may contain a private key or a password.
"""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import termios
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from web3 import Web3
from web3.contract import Contract

from node.chain.contracts import CoordinatorAbi, load_artifact
from node.devnet import ROOT, Deployment, Devnet, Proc, dev_account, free_port, wait_until
from node.jobs.store import JobStore

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"
#: Everything that must never appear in an output: the dev keys used here (with and without 0x) and the password.
SECRETS: list[str] = [PASSWORD]
for _i in range(8):
    _key = dev_account(_i).key.hex().removeprefix("0x")
    SECRETS += [_key, "0x" + _key]


def infera(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs `infera ARGS` as an operator would; fails the test if any output holds a secret or a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        input=stdin if stdin is not None else "",
        timeout=timeout,
        check=False,
    )
    both = result.stdout + result.stderr
    assert "Traceback" not in both, both
    assert "\x1b[" not in both, "no spinner or colour codes when the output is not a terminal"
    for secret in SECRETS:
        assert secret not in both, f"a secret leaked into the output of infera {' '.join(args)}"
    return result


def key_env(index: int) -> dict[str, str]:
    return {"INFERA_PRIVATE_KEY": dev_account(index).key.hex()}


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The single `infera: …` error line of a command that must fail with `code`."""
    assert result.returncode == code, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("infera: ") and "warning" not in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


@dataclass
class Chain:
    dev: Devnet
    addresses: dict[str, object]
    addresses_file: Path
    echo_url: str
    config: Path  # the running node's config (dev account 1)
    node: Proc


@pytest.fixture(scope="module")
def chain(contracts_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """anvil with the contracts deployed by `infera deploy`, an echo container, and a node registered by `infera node
    register` and running."""
    with Devnet(tmp_path_factory.mktemp("cli-ops")) as dev:
        dev.start_anvil()
        out = dev.workdir / "addresses.json"
        deployed = infera(
            "deploy",
            "--rpc-url",
            dev.rpc_url,
            "--key-env",
            "DEPLOYER_KEY",
            "--unbonding-delay-s",
            "60",
            "--example-model",
            "echo",
            "--out",
            str(out),
            env={"DEPLOYER_KEY": dev.deployer.key.hex()},
        )
        addresses = json.loads(ok(deployed))

        def at(key: str, artifact: str) -> Contract:
            return dev.w3.eth.contract(address=addresses[key], abi=load_artifact(artifact).abi)

        dev.abi = CoordinatorAbi.from_artifacts()
        dev.deployment = Deployment(
            coordinator=at("coordinator", "Coordinator"),
            consumer=at("example_consumer", "SentimentConsumer"),
            start_block=int(addresses["start_block"]),
            registry=at("node_registry", "NodeRegistry"),
        )
        _, echo_url = dev.start_container("containers.echo")
        config = dev.write_node_config({"echo": echo_url})
        ok(infera("node", "register", "--config", str(config), env=key_env(1)))
        node = dev.start_node(config)
        yield Chain(dev, addresses, out, echo_url, config, node)


def advance_chain_clock(dev: Devnet, seconds: int) -> None:
    """Moves anvil's clock on and mines a block (the registry reads block.timestamp)."""
    dev.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    dev.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def job_state(dev: Devnet, store_path: Path, request_id: int) -> str | None:
    assert dev.deployment is not None
    store = JobStore(store_path, chain_id=31337, coordinator=dev.deployment.coordinator.address)
    try:
        record = store.record(request_id)
        return None if record is None else str(record.job.state)
    finally:
        store.close()


# --------------------------------------------------------------------------------------------------- deploy


def test_deploy_prints_and_writes_addresses_of_working_contracts(chain: Chain) -> None:
    assert json.loads(chain.addresses_file.read_text()) == chain.addresses
    w3 = chain.dev.w3
    for name in ("node_registry", "coordinator", "example_consumer"):
        assert w3.eth.get_code(Web3.to_checksum_address(str(chain.addresses[name]))), name
    assert chain.addresses["owner"] == chain.dev.deployer.address
    assert chain.dev.deployment is not None
    coordinator, registry = chain.dev.deployment.coordinator, chain.dev.deployment.registry
    assert coordinator.functions.registry().call() == chain.addresses["node_registry"]
    assert registry.functions.minStake().call() == 10**18
    assert registry.functions.unbondingDelay().call() == 60


def test_deploy_with_an_unset_key_env_says_which(tmp_path: Path) -> None:
    line = refused(infera("deploy", "--rpc-url", "http://127.0.0.1:1", "--key-env", "NO_SUCH_KEY_VAR"), code=2)
    assert "--key-env: env variable NO_SUCH_KEY_VAR is not set" in line


# ----------------------------------------------------------------------------------------------------- node


def test_stake_lifecycle_register_stake_unstake_withdraw(chain: Chain) -> None:
    dev = chain.dev
    config = str(dev.write_node_config({"echo": chain.echo_url}, name="staker"))
    env = key_env(4)
    address = dev_account(4).address

    def status() -> dict[str, object]:
        return dict(json.loads(ok(infera("node", "status", "--config", config, "--json", env=env))))

    out = ok(infera("node", "register", "--config", config, "--amount", "1eth", env=env))
    assert f"registered {address} with a stake of 1 ETH; active: yes" in out

    again = refused(infera("node", "register", "--config", config, env=env))
    assert f"reverted with AlreadyRegistered(node={address})" in again
    assert "infera node stake" in again  # what to do instead

    out = ok(infera("node", "stake", "--config", config, "--amount", "0.5eth", env=env))
    assert "1 ETH -> 1.5 ETH" in out
    text = ok(infera("node", "status", "--config", config, env=env))
    assert "stake     1.5 ETH" in text
    assert "status    active" in text

    assert "is unbonding: inactive now" in ok(infera("node", "unstake", "--config", config, env=env))
    now = status()
    assert (now["active"], now["withdrawable"], now["stake_wei"]) == (False, False, str(15 * 10**17))
    early = refused(infera("node", "withdraw", "--config", config, env=env))
    assert "reverted with UnbondingNotOver" in early
    assert "run `infera node withdraw` after that" in early

    advance_chain_clock(dev, 61)
    balance = dev.w3.eth.get_balance(address)
    assert "withdrew 1.5 ETH" in ok(infera("node", "withdraw", "--config", config, env=env))
    assert dev.w3.eth.get_balance(address) - balance > 149 * 10**16  # the stake, less gas
    assert dev.deployment is not None
    assert dev.deployment.registry.functions.stakeOf(address).call() == 0


# -------------------------------------------------------------------------------------------------- request


@pytest.fixture(scope="module")
def answered(chain: Chain) -> dict[str, object]:
    """One request sent with `infera request --json` and its printed answer."""
    text = "hello from the terminal"
    result = infera(
        "request",
        "--config",
        str(chain.config),
        "--model",
        "echo",
        "--input",
        text,
        "--key-env",
        "USER_KEY",
        "--timeout",
        "60",
        "--json",
        env={"USER_KEY": chain.dev.user.key.hex()},
    )
    answer = dict(json.loads(ok(result)))
    answer["sent"] = text
    return answer


def test_request_prints_the_answer_the_echo_container_gave(chain: Chain, answered: dict[str, object]) -> None:
    assert answered["output"] == answered["sent"]
    assert answered["output_hex"] == "0x" + str(answered["sent"]).encode().hex()
    assert answered["node"] == chain.dev.node_account.address
    request_id = int(str(answered["request_id"]))
    assert chain.dev.is_fulfilled(request_id)
    # The plain form prints just the answer, for scripts.
    plain = infera(
        "request",
        *("--config", str(chain.config), "--model", "echo", "--input", "second one", "--key-env", "USER_KEY"),
        env={"USER_KEY": chain.dev.user.key.hex()},
    )
    assert ok(plain) == "second one\n"


def test_request_from_the_key_of_a_running_node_is_refused(chain: Chain) -> None:
    line = refused(
        infera("request", "--config", str(chain.config), "--model", "echo", "--input", "x", env=key_env(1)), code=2
    )
    assert "a node is running with this config" in line
    assert "--key-env" in line


# ----------------------------------------------------------------------------------------------------- jobs


def test_jobs_list_show_and_a_delivered_job_is_not_retried(chain: Chain, answered: dict[str, object]) -> None:
    request_id = int(str(answered["request_id"]))
    store = chain.dev.workdir / "node.db"
    wait_until(
        lambda: job_state(chain.dev, store, request_id) == "confirmed", timeout_s=30, what="the job to be confirmed"
    )
    config = str(chain.config)
    listed = json.loads(ok(infera("jobs", "list", "--config", config, "--state", "confirmed", "--json")))
    assert request_id in [j["request_id"] for j in listed]
    table = ok(infera("jobs", "list", "--config", config, "--limit", "5"))
    assert any(line.split()[:2] == [str(request_id), "confirmed"] for line in table.splitlines())

    shown = json.loads(ok(infera("jobs", "show", str(request_id), "--config", config, "--json")))
    assert (shown["state"], shown["model"], shown["output_hex"]) == ("confirmed", "echo", answered["output_hex"])
    assert shown["tx_hash"] == answered["tx_hash"]

    line = refused(infera("jobs", "retry", str(request_id), "--config", config))
    assert f"job {request_id} not retried: it was delivered on-chain" in line
    bogus = refused(infera("jobs", "list", "--config", config, "--state", "bogus"), code=2)
    assert "--state: 'bogus' is not one of" in bogus


def test_a_failed_job_is_retried_and_delivered_at_the_next_start(chain: Chain) -> None:
    """A node stopped while its container was down, then restarted without the model, fails the job; after the
    operator fixes the config and retries it, the next start delivers it; retrying it again is refused."""
    dev = chain.dev
    operator = dev_account(5)  # a second node, with its own store
    dev.register_node(operator)
    env = key_env(5)
    store = dev.workdir / "second.db"

    def start(models: dict[str, str | dict[str, object]]) -> tuple[Proc, Path]:
        config = dev.write_node_config(models, name="second")
        return dev.start_node(config, env=env, name="second-node"), config

    dead = f"http://127.0.0.1:{free_port()}"
    node, _ = start({"echo-two": dead})
    request_id = dev.request_raw("echo-two", b"retry me")
    wait_until(lambda: job_state(dev, store, request_id) == "running", timeout_s=30, what="the job to run")
    node.popen.kill()  # the node dies while the job waits for its container
    dev.stop(node)
    node, config = start({"other": chain.echo_url})  # the operator dropped the model: the job fails at start
    wait_until(lambda: job_state(dev, store, request_id) == "failed", timeout_s=30, what="the job to fail")
    dev.stop(node)

    failed = json.loads(ok(infera("jobs", "list", "--config", str(config), "--state", "failed", "--json")))
    assert [j["request_id"] for j in failed] == [request_id]
    assert "no longer served" in failed[0]["error"]
    out = ok(infera("jobs", "retry", str(request_id), "--config", str(config)))
    assert f"job {request_id}: failed -> seen" in out

    node, config = start({"echo-two": chain.echo_url})
    wait_until(lambda: dev.is_fulfilled(request_id), timeout_s=60, what="the retried job's delivery")
    wait_until(lambda: job_state(dev, store, request_id) == "confirmed", timeout_s=30, what="the job to settle")
    line = refused(infera("jobs", "retry", str(request_id), "--config", str(config)))
    assert "it was delivered on-chain" in line
    dev.stop(node)


# ------------------------------------------------------------------------------------------- keys, config


def write_config(path: Path, chain: Chain, wallet: str) -> Path:
    assert chain.dev.deployment is not None
    path.write_text(
        f'[chain]\nrpc_url = "{chain.dev.rpc_url}"\n'
        f'coordinator_address = "{chain.dev.deployment.coordinator.address}"\n'
        f"[wallet]\n{wallet}\n"
        f'[store]\npath = "{path.with_suffix(".db")}"\n[api]\nport = 0\n'
        f'[[models]]\nname = "echo"\nurl = "{chain.echo_url}"\n'
    )
    return path


def test_keys_new_then_config_check_with_that_keystore_passes(chain: Chain, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    out = ok(infera("keys", "new", "--out", str(tmp_path / "keys"), "--password-file", str(password_file)))
    address = out.split()[1]
    (keystore,) = (tmp_path / "keys").iterdir()
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    assert address.lower().removeprefix("0x") in keystore.name
    assert json.loads(keystore.read_text())["crypto"]["kdf"] == "scrypt"

    wallet = f'keystore_path = "{keystore}"\nkeystore_password_file = "{password_file}"'
    config = write_config(tmp_path / "node.toml", chain, wallet)
    result = infera("config", "check", "--config", str(config), "--online", "--chain-id", "31337")
    assert ok(result).startswith(f"config OK: {config}")
    assert f"key       {address} (keystore {keystore})" in result.stdout
    assert f"{address} is not an active node" in result.stderr  # a warning: it has not registered yet

    # A wrong password is named for what it is (`config check` and every command that signs share the loader).
    wrong = write_config(
        tmp_path / "wrong.toml", chain, f'keystore_path = "{keystore}"\nkeystore_password_env = "KS_PASSWORD"'
    )
    line = refused(infera("config", "check", "--config", str(wrong), env={"KS_PASSWORD": "not it"}))
    assert f"wallet.keystore_path: wrong password for keystore {keystore}" in line
    # Reading the node's standing needs only its address, which the keystore states: no password at all.
    status = ok(infera("node", "status", "--config", str(wrong)))
    assert f"node      {address}" in status
    assert "not registered" in status


def test_keys_import_reads_the_key_from_stdin_and_list_shows_it(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    account = dev_account(6)
    folder = tmp_path / "keys"
    args = ("keys", "import", "--out", str(folder), "--password-file", str(password_file))
    out = ok(infera(*args, stdin=account.key.hex() + "\n"))
    assert f"address   {account.address}" in out
    (keystore,) = folder.iterdir()
    (folder / "notes.txt").write_text("not a keystore")
    assert ok(infera("keys", "list", str(folder))) == f"{account.address}  {keystore}\n"

    garbage = "not-a-key-" + "cd" * 20
    line = refused(infera(*args, stdin=garbage), code=2)
    assert "not a valid private key" in line
    assert garbage not in line
    no_tty = refused(infera("keys", "new", "--out", str(folder)), code=2)
    assert "no terminal to ask for the password: pass --password-file or --password-env" in no_tty


def on_terminal(args: list[str], answers: list[bytes], timeout_s: float = 60) -> tuple[int, str]:
    """Runs `infera ARGS` on a pseudo-terminal, typing each answer once a hidden prompt waits for it (echo off);
    returns the exit code and everything the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: become the command
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "node.cli", *args])
    shown = bytearray()

    def read(wait_s: float = 0.05) -> bool:
        """Reads what is there; False once the command closed the terminal."""
        if select.select([fd], [], [], wait_s)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return False
            shown.extend(chunk)
            return bool(chunk)
        return True

    try:
        for i, answer in enumerate(answers):
            wait_until(
                lambda i=i: read() and shown.count(b": ") > i and not termios.tcgetattr(fd)[3] & termios.ECHO,
                timeout_s=timeout_s,
                what=f"hidden prompt {i + 1}",
            )
            os.write(fd, answer)
        wait_until(lambda: not read(), timeout_s=timeout_s, what="the command to finish")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_keys_new_on_a_terminal_asks_twice_without_echo_and_shows_a_spinner(tmp_path: Path) -> None:
    code, shown = on_terminal(
        ["keys", "new", "--out", str(tmp_path / "k.json")], [PASSWORD.encode() + b"\n", PASSWORD.encode() + b"\n"]
    )
    assert code == 0, shown
    assert "Keystore password: " in shown
    assert "Repeat for confirmation: " in shown
    assert PASSWORD not in shown
    assert "encrypting (scrypt)" in shown  # the spinner, drawn because stderr is a terminal
    assert stat.S_IMODE((tmp_path / "k.json").stat().st_mode) == 0o600


def test_config_check_names_every_problem_on_its_own_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[chain]\nrpc_url = "ftp://x"\ncoordinator_address = "0x1234"\n[wallet]\nprivate_key_env = "K"\n'
        'keystore_password_file = "/nowhere"\n[[models]]\nname = "echo"\nurl = "http://127.0.0.1:1"\nspeed = 3\n'
    )
    result = infera("config", "check", "--config", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith(f"infera: {bad}: ") for line in lines), lines
    keys = {line.removeprefix(f"infera: {bad}: ").split(":")[0] for line in lines}
    assert {"chain.rpc_url", "chain.coordinator_address", "models.0.speed"} <= keys

    missing = tmp_path / "missing.toml"
    missing.write_text(
        '[chain]\nrpc_url = "http://127.0.0.1:1"\ncoordinator_address = "0x5FbDB2315678afecb367f032d93F642f64180aa3"\n'
        f'[wallet]\nkeystore_path = "{tmp_path}/k.json"\nkeystore_password_file = "{tmp_path}/nope"\n'
        '[[models]]\nname = "echo"\nurl = "http://127.0.0.1:1"\n'
    )
    line = refused(infera("config", "check", "--config", str(missing)))
    assert f"wallet.keystore_password_file: password file {tmp_path}/nope does not exist" in line
