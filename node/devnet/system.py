"""A whole Infera system on one machine: anvil, the contracts, a model container and the node (`Devnet`).

`infera devnet` and the e2e tests both use `Devnet`. Guarantees: every process it starts is stopped when the
`with` block ends, however it ends (answer, error, Ctrl-C); each process writes its log to the work folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.contract import Contract

from node.chain.contracts import CoordinatorAbi, model_id
from node.commands.chain_ops import OpsError, Reverts, deploy_contract, deploy_contracts, send_tx
from node.devnet.deployment import (
    ANVIL_MNEMONIC,
    DEFAULT_FEE_WEI,
    DEFAULT_MODEL,
    DEVNET_ATTESTATION_SLASH_WEI,
    DEVNET_CHALLENGE_WINDOW_S,
    DEVNET_MIN_FAILURE_REPORTS,
    DEVNET_MIN_STAKE_WEI,
    DEVNET_REEXECUTION_QUORUM,
    DEVNET_REEXECUTION_SLASH_WEI,
    DEVNET_UNBONDING_S,
    DEVNET_VOTE_WINDOW_S,
    Deployment,
    dev_account,
)
from node.devnet.processes import ROOT, DevnetError, Proc, free_port, http_ok, tcp_open, tool, wait_until

log = logging.getLogger(__name__)


class Devnet:
    """Starts and stops the parts of a local Infera system; use as a context manager."""

    def __init__(self, workdir: Path, *, model_name: str = DEFAULT_MODEL, rpc_port: int | None = None) -> None:
        """`rpc_port`: where `start_anvil` listens (default: a free port the OS picks)."""
        self.workdir = workdir
        self.model_name = model_name
        self.procs: list[Proc] = []
        self.rpc_port = rpc_port or free_port()
        self.rpc_url = f"http://127.0.0.1:{self.rpc_port}"
        self.ws_url = f"ws://127.0.0.1:{self.rpc_port}"
        self.w3 = Web3(HTTPProvider(self.rpc_url, request_kwargs={"timeout": 30}))
        self.deployer = dev_account(0)
        self.node_account = dev_account(1)
        self.user = dev_account(2)
        self.deployment: Deployment | None = None
        self.abi: CoordinatorAbi | None = None  # loaded by deploy(), after forge build
        self.reverts: Reverts | None = None
        self.api_port = 0  # the node's health port, set by write_node_config
        #: [store] keys of every node config written without its own (`write_node_config`'s `store`): a test suite
        #: run against a PostgreSQL store sets its `url` here.
        self.store_defaults: dict[str, Any] | None = None

    def __enter__(self) -> Devnet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self.stop_all()

    # ------------------------------------------------------------------------------------------- processes

    def start(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None) -> Proc:
        """Starts `argv` in its own session from the repository root, with `env` added to this process's
        environment and stdout and stderr appended to `<workdir>/<name>.log`; `stop_all` stops it. Does not wait
        for it to be ready; raises `OSError` when the program cannot be started."""
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log_file:
            popen = subprocess.Popen(
                list(argv),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=ROOT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; returns the exit code."""
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait()
        if proc in self.procs:
            self.procs.remove(proc)
        return int(proc.popen.returncode)

    def stop_all(self) -> None:
        """Stops every process still running, newest first (each as `stop` does)."""
        for proc in reversed(list(self.procs)):
            self.stop(proc)

    # ------------------------------------------------------------------------------------------------ parts

    def start_anvil(self, *extra: str) -> Proc:
        """Starts anvil on `rpc_url` with the well-known dev accounts (`extra`: more anvil flags) and waits up to
        30 s for it to answer; raises `DevnetError` when it exits first, `TimeoutError` when it never answers."""
        proc = self.start(
            "anvil",
            [
                tool("anvil"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.rpc_port),
                "--mnemonic",
                ANVIL_MNEMONIC,
                # Past its in-memory window anvil writes every block's state under ~/.foundry/anvil/tmp and leaves
                # it there when stopped: 672 MB per 3,000 empty blocks, 6.5 GB per benchmark phase. A devnet needs
                # no state older than that window.
                "--max-persisted-states",
                "0",
                *extra,
            ],
        )
        wait_until(lambda: self._rpc_up(), timeout_s=30, what=f"anvil on {self.rpc_url}", alive=proc.check_alive)
        return proc

    def start_mosquitto(self, users: dict[str, str] | None = None) -> tuple[Proc, str]:
        """A Mosquitto broker on a free loopback port, no persistence; anonymous unless `users` (name → password)
        are given. Returns it and its URL."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise DevnetError("mosquitto not found: `apt-get install mosquitto` (or `make deps`)")
        port = free_port()
        conf = self.workdir / "mosquitto.conf"
        # Started as root, Mosquitto would switch to its own user and lose access to files in our work folder.
        lines = [f"listener {port} 127.0.0.1", "persistence false", f"user {getpass.getuser()}"]
        if users:
            password_file = self.workdir / "mosquitto.passwd"
            password_file.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run(
                    [
                        shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd",
                        "-b",
                        str(password_file),
                        name,
                        password,
                    ],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        conf.write_text("\n".join(lines) + "\n")
        proc = self.start("mosquitto", [binary, "-c", str(conf)])
        wait_until(lambda: tcp_open(port), timeout_s=30, what=f"mosquitto on port {port}", alive=proc.check_alive)
        return proc, f"mqtt://127.0.0.1:{port}"

    def _rpc_up(self) -> bool:
        try:
            return self.w3.is_connected()
        except Exception:
            return False

    def _transact(self, fn: Any, sender: LocalAccount, value: int = 0) -> Any:
        """Sends `fn` from `sender` and returns its receipt; a revert raises `DevnetError` naming the error."""
        try:
            what = f"devnet: {getattr(fn, 'fn_name', 'transaction')}"
            return send_tx(self.w3, fn, sender, what=what, reverts=self._reverts(), value=value)
        except OpsError as exc:
            raise DevnetError(str(exc)) from None

    def _reverts(self) -> Reverts:
        if self.reverts is None:
            self.reverts = Reverts()  # from the forge artifacts: built by now
        return self.reverts

    def _deploy(self, name: str, *args: Any) -> Contract:
        try:
            return deploy_contract(self.w3, name, self.deployer, *args, reverts=self._reverts())
        except OpsError as exc:
            raise DevnetError(str(exc)) from None

    def deploy(self) -> Deployment:
        """Deploys the node registry, the coordinator, the subscription manager and the example consumer (as `infera
        deploy` does, with `node.commands.chain_ops.deploy_contracts`), stakes the node from `node_account`, deploys
        the AttestationVerifier and the ReexecutionVerifier and approves them in the registry, and sets the failure
        quorum to `DEVNET_MIN_FAILURE_REPORTS` (1). Writes every address to `<workdir>/deployment.json`. Returns what
        it deployed; raises `DevnetError` naming the step that reverted or failed."""
        self.abi = CoordinatorAbi.from_artifacts()
        try:
            deployed = deploy_contracts(
                self.w3,
                self.deployer,
                min_stake_wei=DEVNET_MIN_STAKE_WEI,
                unbonding_delay_s=DEVNET_UNBONDING_S,
                example_model=self.model_name,
            )
        except OpsError as exc:
            raise DevnetError(str(exc)) from None
        assert deployed.consumer is not None
        self._transact(deployed.registry.functions.register(), self.node_account, DEVNET_MIN_STAKE_WEI)
        coordinator, registry = deployed.coordinator.address, deployed.registry.address
        attestation = self._deploy(
            "AttestationVerifier", self.deployer.address, coordinator, registry, DEVNET_ATTESTATION_SLASH_WEI
        )
        reexecution = self._deploy(
            "ReexecutionVerifier",
            self.deployer.address,
            coordinator,
            registry,
            DEVNET_CHALLENGE_WINDOW_S,
            DEVNET_VOTE_WINDOW_S,
            DEVNET_REEXECUTION_QUORUM,
            DEVNET_REEXECUTION_SLASH_WEI,
        )
        for verifier in (attestation, reexecution):
            self._transact(deployed.registry.functions.setVerifier(verifier.address, True), self.deployer)
        self.deployment = Deployment(
            deployed.coordinator,
            deployed.consumer,
            deployed.start_block,
            deployed.registry,
            deployed.subscription_manager,
            attestation_verifier=attestation,
            reexecution_verifier=reexecution,
        )
        self.set_min_failure_reports(DEVNET_MIN_FAILURE_REPORTS)
        (self.workdir / "deployment.json").write_text(json.dumps(self.deployment.addresses(), indent=2) + "\n")
        return self.deployment

    def set_min_failure_reports(self, reports: int) -> None:
        """Sets the coordinator's `minFailureReports` (its other limits unchanged) as its owner, the deployer: with 1,
        one node's failure report ends a failing request at once. Logs the change."""
        assert self.deployment is not None
        c = self.deployment.coordinator.functions
        limits = [
            c.minFee().call(),
            c.maxCallbackGasLimit().call(),
            c.maxInputBytes().call(),
            c.maxOutputBytes().call(),
            c.maxRedundancy().call(),
            reports,
            c.maxDeadlineWindow().call(),
        ]
        self._transact(c.setLimits(*limits), self.deployer)
        log.info("devnet: coordinator minFailureReports set to %d (mainnet default 2)", reports)

    def set_attester(self, key: str, model: str, model_digest: bytes, allowed: bool = True) -> None:
        """Registers (or, with `allowed` False, revokes) the attestation key at address `key` for `model` (a name:
        its id is keccak256 of it) with weights digest `model_digest` (32 bytes) in the devnet's AttestationVerifier,
        as its owner, the deployer."""
        assert self.deployment is not None
        assert self.deployment.attestation_verifier is not None
        fn = self.deployment.attestation_verifier.functions.setAttester(key, model_id(model), model_digest, allowed)
        self._transact(fn, self.deployer)

    def start_container(
        self,
        module: str = "containers.classify",
        *args: str,
        port: int | None = None,
        timeout_s: float = 180,
        name: str | None = None,
    ) -> tuple[Proc, str]:
        """Starts a model server process and waits for its /health; returns it and its base URL."""
        port = port or free_port()
        url = f"http://127.0.0.1:{port}"
        env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = self.start(
            name or module.rsplit(".", 1)[-1], [sys.executable, "-m", module, "--port", str(port), *args], env=env
        )
        wait_until(
            lambda: http_ok(f"{url}/health"),
            timeout_s=timeout_s,
            what=f"{module} /health on {url}",
            interval_s=0.2,
            alive=proc.check_alive,
        )
        return proc, url

    def write_node_config(
        self,
        models: dict[str, str | dict[str, Any]],
        *,
        mqtt_url: str | None = None,
        name: str = "node",
        rpc_url: str | None = None,
        ws_url: str | None = None,
        extra_key_envs: Sequence[str] = (),
        start_block: int | None = None,
        store: dict[str, Any] | None = None,
        **chain: Any,
    ) -> Path:
        """Writes `<name>.toml`: `models` maps a model name to its container URL, or to its whole table. The devnet
        acts on requests at once (`confirmations = 0`) unless told otherwise; the job store is `<name>.db`, the
        health endpoint on a free port (`api_port`), ready however long anvil (which mines on demand) stays idle.
        Logs are read from the deploy block unless `start_block` is given; `store` adds [store] keys (a replica's
        PostgreSQL `url`, `lease_ttl_s`, `replica_name`)."""
        if self.deployment is None:
            raise DevnetError("deploy() first")
        chain = {"confirmations": 0, **chain}
        self.api_port = free_port()
        lines = [
            "[chain]",
            f"rpc_url = {_toml_value(rpc_url or self.rpc_url)}",
            *([f"ws_url = {_toml_value(ws_url or self.ws_url)}"] if ws_url != "" else []),
            f"coordinator_address = {_toml_value(self.deployment.coordinator.address)}",
            *(
                [f"subscription_manager_address = {_toml_value(self.deployment.subscriptions.address)}"]
                if self.deployment.subscriptions is not None
                else []
            ),
            f"start_block = {self.deployment.start_block if start_block is None else start_block}",
            *(f"{k} = {_toml_value(v)}" for k, v in chain.items()),
            "",
            "[wallet]",
            'private_key_env = "INFERA_PRIVATE_KEY"',
            f"extra_key_envs = [{', '.join(_toml_value(e) for e in extra_key_envs)}]",
            "",
            "[store]",
            f"path = {_toml_value(str(self.workdir / (name + '.db')))}",
            *(f"{k} = {_toml_value(v)}" for k, v in (store or self.store_defaults or {}).items()),
            "",
            "[api]",
            f"port = {self.api_port}",
            # anvil mines only when a transaction comes: an idle devnet hears no block for hours and is still ready.
            "max_silence_s = 86400",
        ]
        if mqtt_url:
            lines += ["", "[mqtt]", f"url = {_toml_value(mqtt_url)}"]
        for model, spec in models.items():
            table = {"url": spec, "timeout_s": 30} if isinstance(spec, str) else spec
            lines += [
                "",
                "[[models]]",
                f"name = {_toml_value(model)}",
                *(f"{k} = {_toml_value(v)}" for k, v in table.items()),
            ]
        path = self.workdir / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def private_key_hex(self) -> str:
        """The node's devnet key, as handed to the node process in its environment (for leak checks)."""
        return str(self.node_account.key.hex())

    def start_node(self, config: Path, *, env: dict[str, str] | None = None, name: str = "node") -> Proc:
        """Starts `infera run --config <config>` with the node's devnet key in `INFERA_PRIVATE_KEY` (plus `env`);
        its log is `<workdir>/<name>.log`. Does not wait for it to be ready."""
        env = {"INFERA_PRIVATE_KEY": self.private_key_hex(), **(env or {})}
        return self.start(name, [sys.executable, "-m", "node.cli", "run", "--config", str(config)], env=env)

    # -------------------------------------------------------------------------------------------- requests

    def ask_sentiment(self, text: str, fee_wei: int = DEFAULT_FEE_WEI) -> int:
        """Sends the example consumer's request as the dApp user with `fee_wei`; returns the request id. Raises
        `DevnetError` naming the error when it reverts."""
        assert self.deployment is not None
        receipt = self._transact(self.deployment.consumer.functions.askSentiment(text), self.user, fee_wei)
        return self.request_id_of(receipt)

    def request_raw(
        self, model: str, input_: bytes, callback_gas_limit: int = 200_000, fee_wei: int = DEFAULT_FEE_WEI
    ) -> int:
        """Sends a request straight to the coordinator from the user's account (no consumer contract)."""
        assert self.deployment is not None
        fn = self.deployment.coordinator.functions.requestInference(model_id(model), input_, callback_gas_limit)
        return self.request_id_of(self._transact(fn, self.user, fee_wei))

    def request_many(
        self,
        model: str,
        inputs: Sequence[bytes],
        *,
        callback_gas_limit: int = 100_000,
        fee_wei: int = DEFAULT_FEE_WEI,
        wait: bool = True,
        sender: LocalAccount | None = None,
    ) -> list[Any]:
        """Sends one request per input straight to the coordinator as a burst (local nonces, no waiting between
        them). Returns the request ids, or the transaction hashes with `wait=False` (when blocks are mined by hand)."""
        assert self.deployment is not None
        sender = sender or self.user
        nonce = self.w3.eth.get_transaction_count(sender.address, "pending")
        fees = {"maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
        hashes = []
        for i, input_ in enumerate(inputs):
            fn = self.deployment.coordinator.functions.requestInference(model_id(model), input_, callback_gas_limit)
            params: Any = {"from": sender.address, "value": fee_wei, "nonce": nonce + i, "gas": 400_000, **fees}
            tx: Any = fn.build_transaction(params)
            hashes.append(self.w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction))
        if not wait:
            return hashes
        return [self.request_id_of(self.w3.eth.wait_for_transaction_receipt(h, timeout=60)) for h in hashes]

    def register_node(self, account: LocalAccount) -> None:
        """Stakes `account` as one more node."""
        assert self.deployment is not None
        self._transact(self.deployment.registry.functions.register(), account, DEVNET_MIN_STAKE_WEI)

    def request_id_of(self, receipt: Any) -> int:
        """The request id of the coordinator's `RequestCreated` log in `receipt` (the first, when there are
        several); raises `DevnetError` when there is none."""
        assert self.abi is not None
        for raw in receipt["logs"]:
            if raw["topics"] and "0x" + bytes(raw["topics"][0]).hex() == self.abi.request_created_topic:
                return self.abi.decode_request_created(raw).request_id
        raise DevnetError("no RequestCreated event in the receipt")

    def sentiment(self, request_id: int) -> tuple[str, str, int, bool]:
        """What the example consumer stored for `request_id`: (text, label, score in millionths, answered)."""
        assert self.deployment is not None
        text, label, score, answered, _failed = self.deployment.consumer.functions.sentiments(request_id).call()
        return str(text), str(label), int(score), bool(answered)

    def request_state(self, request_id: int) -> dict[str, Any]:
        """The coordinator's view of a request (consumer, deadline, redundancy, delivered, failures, … status)."""
        assert self.deployment is not None
        view = self.deployment.coordinator.functions.getRequest(request_id).call()
        fields = (
            "consumer",
            "deadline",
            "redundancy",
            "delivered",
            "failures",
            "callbackGasLimit",
            "protocolFeeBps",
            "status",
            "token",
            "feePerNode",
        )
        return dict(zip(fields, view, strict=True))

    def is_fulfilled(self, request_id: int) -> bool:
        """Whether at least one node delivered a result for the request."""
        return int(self.request_state(request_id)["delivered"]) > 0

    def wait_sentiment(
        self, request_id: int, *, timeout_s: float, alive: Callable[[], None] | None = None
    ) -> tuple[str, int]:
        """Waits for the example consumer's answer to `request_id`: (label, score in millionths). Raises
        `TimeoutError` after `timeout_s` seconds, or what `alive` raises (a node that exited)."""

        def answered() -> tuple[str, str, int, bool] | None:
            state = self.sentiment(request_id)
            return state if state[3] else None

        _, label, score, _ = wait_until(
            answered,
            timeout_s=timeout_s,
            what=f"the on-chain answer to request {request_id}",
            interval_s=0.1,
            alive=alive,
        )
        return label, score


def _toml_value(v: Any) -> str:
    """`v` as a TOML value: bool, int (64-bit; a larger one as a string), float, str (a basic string, escaped),
    list or tuple (an array), dict (an inline table); anything else as its `str`, quoted."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v) if abs(v) < 2**63 else _toml_string(str(v))  # TOML integers are 64-bit
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_string(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return _toml_string(str(v))


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    """`text` as a TOML basic string: quotes, backslashes and control characters escaped, the rest as is."""
    return (
        '"' + "".join(_TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if c < " " or c == "\x7f" else c) for c in text) + '"'
    )


#: `prctl` option: the signal this process gets when the thread that forked it exits (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get SIGTERM when this process dies (Linux `prctl(PR_SET_PDEATHSIG)`), so
    a SIGKILLed devnet leaves no process behind; None off Linux or off the main thread (the signal fires when the
    forking thread exits, which for another thread is long before the devnet ends)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: the child only calls into it
    parent = os.getpid()

    def set_death_signal() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody is left to send the signal
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal
