"""`infera devnet`: the whole system on one machine, ready for a dApp: anvil, the contracts, the chosen model servers
(`node/devnet/models.py`), the node, example requests, the development accounts and `devnet.json`.

Order: anvil (on `--port`, default 8545 when free) → forge build → deploy (as `Devnet.deploy`) and the served
models' example consumers → model containers (each waited on until its /health answers) → the node, waited on
until its `/readyz` says ready with every container healthy → one example request per served model (unless
`--no-examples`) → `devnet.json` (`node/devnet/manifest.py`) and the accounts → the ready line.

Guarantees: an unknown model, a work folder another devnet holds (`node/devnet/workdir.py`), an `--out` that cannot
be written or a taken `--port` fails before anything starts; the work folder and `--out` are made absolute first, so
the devnet runs from any folder; each run starts from a fresh chain (the last run's job store removed). SIGTERM and
SIGHUP unwind like Ctrl-C, so every process the devnet started is stopped however the command ends; a SIGKILLed
devnet's children get SIGTERM from the kernel (`Devnet.start`). `devnet.json` appears only once the devnet is ready
(a stale one is removed at start) and is removed on stop while it is still the one this devnet wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak
from web3.contract import Contract

from node.chain.contracts import model_id
from node.devnet.deployment import DEFAULT_FEE_WEI, DEFAULT_MODEL, DEVNET_MIN_FAILURE_REPORTS, dev_account
from node.devnet.manifest import (
    ACCOUNT_COUNT,
    KEYS_WARNING,
    Served,
    account_role,
    container_wire,
    dev_accounts,
    manifest,
    write_manifest,
)
from node.devnet.models import DEFAULT_DEVNET_MODELS, DEVNET_MODELS, check_models, generate_checkpoint
from node.devnet.processes import DevnetError, Proc, forge_build, free_port, port_free, wait_until
from node.devnet.system import Devnet
from node.devnet.workdir import check_writable, hold_out, hold_workdir

__all__ = ["DEFAULT_DEVNET_MODELS", "DEFAULT_RPC_PORT", "DEVNET_MODELS", "choose_rpc_port", "run_devnet"]

#: The most nodes `--nodes` starts.
MAX_NODES = 8
#: The anvil account of the second node; the third's is the next, and so on (accounts 0 to 9 keep their roles).
EXTRA_NODE_INDEX = ACCOUNT_COUNT
#: anvil's (and most wallets' and frameworks') usual local RPC port; the devnet takes it when it is free.
DEFAULT_RPC_PORT = 8545
#: What the devnet asks the LLM to moderate, and the generator to continue.
SPAM_TEXT = "WIN a FREE iPhone!!! Click here now to claim your prize"
PROMPT_TEXT = "The capital of France is"


def _say(line: str) -> None:
    print(line, flush=True)  # a pipe (a test, a supervisor) sees each line as it is said


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


#: Signals that stop the devnet as Ctrl-C does: Ctrl-C itself (set here too, since a shell starting the devnet in
#: the background with `&` hands it SIGINT ignored), a supervisor's stop, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stop_signals_as_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP unwind as `KeyboardInterrupt`, so the `with Devnet` block still stops every
    child."""
    previous = {signum: signal.signal(signum, _raise_interrupt) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _removed_when_stopped(path: Path) -> Iterator[Callable[[], None]]:
    """Yields `written`, to call once `path` is written; when the block ends, removes `path` if it is still that
    file (same inode and modification time: nobody replaced it since)."""
    ours: list[os.stat_result] = []

    def written() -> None:
        ours.append(path.stat())

    try:
        yield written
    finally:
        with contextlib.suppress(OSError):
            now = path.stat()
            if ours and (now.st_ino, now.st_mtime_ns) == (ours[-1].st_ino, ours[-1].st_mtime_ns):
                path.unlink()


def choose_rpc_port(port: int | None) -> tuple[int, str | None]:
    """The port anvil will listen on, and a note to print when it is not the one asked for. `port` given: that port,
    or `DevnetError` naming it when something already listens there. None: `DEFAULT_RPC_PORT` when free, else a free
    port the OS picks (with a note saying so)."""
    if port is not None:
        if not port_free(port):
            raise DevnetError(
                f"port {port} is in use: something already listens on 127.0.0.1:{port} (another devnet or anvil?). "
                "Stop it, or choose another port with --port N"
            )
        return port, None
    if port_free(DEFAULT_RPC_PORT):
        return DEFAULT_RPC_PORT, None
    chosen = free_port()
    return chosen, (
        f"devnet: port {DEFAULT_RPC_PORT} is in use, so anvil listens on {chosen} instead "
        "(pass --port N for a URL that stays the same)"
    )


def node_readiness(api_url: str) -> dict[str, Any] | None:
    """The node's `/readyz` body (200 or 503 alike), or None when it does not answer yet; never raises."""
    try:
        with urllib.request.urlopen(f"{api_url}/readyz", timeout=2) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except (urllib.error.URLError, OSError):
        return None
    with contextlib.suppress(ValueError):
        answer = json.loads(body)
        if isinstance(answer, dict):
            return answer
    return None


def wait_node_ready(api_url: str, models: Sequence[str], *, timeout_s: float, alive: Callable[[], None]) -> None:
    """Waits until the node's `/readyz` says ready and every model of `models` healthy. Raises `TimeoutError` with
    the problems it last reported, or what `alive` raises (a process that exited)."""
    last: dict[str, Any] = {}

    def ready() -> bool:
        nonlocal last
        last = node_readiness(api_url) or {"problems": ["no answer yet"]}
        containers = last.get("containers") or {}
        return bool(last.get("ready")) and all(containers.get(m) for m in models)

    try:
        wait_until(ready, timeout_s=timeout_s, what=f"{api_url}/readyz", interval_s=0.2, alive=alive)
    except TimeoutError as exc:
        raise TimeoutError(
            f"{exc}; it last said: {last.get('problems')}, containers {last.get('containers')}"
        ) from None


def _alive(procs: Sequence[Proc]) -> Callable[[], None]:
    def check() -> None:
        for proc in procs:
            proc.check_alive()

    return check


def _deploy_examples(
    dev: Devnet, keys: Sequence[str], say: Callable[[str], None]
) -> dict[str, tuple[str, Contract, str]]:
    """Deploys the example consumers of the served models (the SentimentConsumer is already there); returns key →
    (contract name, contract, model name)."""
    assert dev.deployment is not None
    deployed: dict[str, tuple[str, Contract, str]] = {}
    for key in keys:
        served = DEVNET_MODELS[key]
        for example in served.examples:
            if example.key == "example_consumer":
                continue
            contract = dev._deploy(example.contract, dev.deployment.coordinator.address, model_id(served.name))
            deployed[example.key] = (example.contract, contract, served.name)
            say(f"devnet: {example.contract} {contract.address} asks {served.name}: {example.asks}")
    return deployed


def _start_containers(dev: Devnet, keys: Sequence[str], say: Callable[[str], None]) -> dict[str, tuple[Proc, str]]:
    """Starts one model server per key and waits for each /health; returns key → (process, URL)."""
    started = {}
    for key in keys:
        served = DEVNET_MODELS[key]
        args = served.args
        if key == "generate":
            t0 = time.monotonic()
            say("devnet: preparing the SmolLM2 checkpoint for `generate` (once per work folder)…")
            args = ("--model-path", str(generate_checkpoint(dev.workdir)), "--name", served.name, *args)
            say(f"devnet: checkpoint ready in {time.monotonic() - t0:.1f} s")
        elif key == "echo":
            args = ("--name", served.name, *args)
        t0 = time.monotonic()
        say(f"devnet: starting the {served.name} container (loads {served.loads})…")
        started[key] = dev.start_container(served.module, *args, name=key, timeout_s=300)
        say(f"devnet: container ready on {started[key][1]} in {time.monotonic() - t0:.1f} s")
    return started


def _ask_examples(
    dev: Devnet,
    keys: Sequence[str],
    consumers: dict[str, tuple[str, Contract, str]],
    text: str,
    alive: Callable[[], None],
    say: Callable[[str], None],
) -> None:
    """One request per served model from the dApp account (the LLM: two), each answer read back from the chain."""
    assert dev.deployment is not None
    t0 = time.monotonic()
    if "classify" in keys:
        request_id = dev.ask_sentiment(text)
        say(f'devnet: asked for the sentiment of "{text}" as request {request_id}')
        label, score = dev.wait_sentiment(request_id, timeout_s=120, alive=alive)
        say(
            f"on-chain result: request {request_id} label={label} scoreE6={score} "
            f"(score {score / 1e6:.4f}) after {time.monotonic() - t0:.1f} s"
        )
    if "echo" in keys:
        data = text.encode()
        request_id = dev.request_raw(DEVNET_MODELS["echo"].name, data, callback_gas_limit=100_000)
        say(f'devnet: asked echo to answer "{text}" as request {request_id} (straight to the Coordinator)')
        wait_until(
            lambda: dev.is_fulfilled(request_id), timeout_s=60, what=f"echo's answer to {request_id}", alive=alive
        )
        logs = dev.deployment.coordinator.events.RequestFulfilled.get_logs(
            from_block=dev.deployment.start_block, argument_filters={"requestId": request_id}
        )
        same = bool(logs) and bytes(logs[0]["args"]["outputHash"]) == keccak(data)
        say(f"on-chain result: request {request_id} echo fulfilled, output hash {'=' if same else '!='} input hash")
    if "generate" in keys:
        prompt = consumers["prompt_consumer"][1]
        receipt = dev._transact(prompt.functions.ask(PROMPT_TEXT, 16), dev.user, DEFAULT_FEE_WEI)
        request_id = dev.request_id_of(receipt)
        say(f'devnet: asked the generator to continue "{PROMPT_TEXT}" (request {request_id})')
        reply = wait_until(
            lambda: (
                prompt.functions.replies(request_id).call()
                or (dev.request_state(request_id)["status"] == 3 and "(failed)")
                or None
            ),
            timeout_s=180,
            what=f"the reply to request {request_id}",
            alive=alive,
        )
        say(f"on-chain result: request {request_id} text={json.dumps(reply)}")
    if "llm" in keys:
        _ask_llm(dev, consumers["llm_moderation"][1], consumers["llm_score"][1], text, alive, say)


def _ask_llm(
    dev: Devnet, moderation: Contract, score: Contract, text: str, alive: Callable[[], None], say: Callable[[str], None]
) -> None:
    """Asks LLMModeration whether `SPAM_TEXT` is spam and LLMScore to score `text`; says the answers stored
    on-chain."""
    verdict_id = dev.request_id_of(dev._transact(moderation.functions.check(SPAM_TEXT), dev.user, DEFAULT_FEE_WEI))
    score_id = dev.request_id_of(dev._transact(score.functions.score(text), dev.user, DEFAULT_FEE_WEI))
    say(f'devnet: asked the LLM whether "{SPAM_TEXT}" is spam, yes or no (request {verdict_id})')
    say(f'devnet: asked the LLM to score "{text}" from 1 to 10 (request {score_id})')
    verdict = wait_until(
        lambda: (v := moderation.functions.verdicts(verdict_id).call()) and (v[0] or v[2]) and v,
        timeout_s=180,
        what=f"the moderation verdict of request {verdict_id}",
        alive=alive,
    )
    value = wait_until(
        lambda: score.functions.scores(score_id).call() or score.functions.failed(score_id).call() or None,
        timeout_s=180,
        what=f"the score of request {score_id}",
        alive=alive,
    )
    spam = "failed" if verdict[2] else ("yes" if verdict[1] else "no")
    scored = "failed" if value is True else f"{value}/10"
    say(f"on-chain result: request {verdict_id} spam={spam}; request {score_id} score={scored}")


def _start_nodes(
    dev: Devnet, count: int, models: dict[str, str | dict[str, Any]], names: Sequence[str], say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Starts `count` nodes serving `models` and waits until each is ready (`wait_node_ready`, 120 s each): the first
    with the node account (1), already staked, as `node`; the others with anvil accounts `EXTRA_NODE_INDEX`, … (past
    the ten dApp scripts see), staked here, as `node2`, `node3`, …, each with its own config and store. Returns each
    node's devnet.json entry: `{"address", "api_url", "config", "log"}`."""
    infos = []
    for number in range(1, count + 1):
        name = "node" if number == 1 else f"node{number}"
        account = dev.node_account if number == 1 else dev_account(EXTRA_NODE_INDEX + number - 2)
        if number > 1:
            dev.register_node(account)
        config = dev.write_node_config(models, name=name)
        proc = dev.start_node(config, name=name, env={"INFERA_PRIVATE_KEY": "0x" + bytes(account.key).hex()})
        api_url = f"http://127.0.0.1:{dev.api_port}"
        t0 = time.monotonic()
        wait_node_ready(api_url, names, timeout_s=120, alive=_alive(dev.procs))
        say(
            f"devnet: node {account.address} ready in {time.monotonic() - t0:.1f} s ({api_url}/readyz; "
            f"log {proc.log_path}; config {config})"
        )
        infos.append({"address": account.address, "api_url": api_url, "config": str(config), "log": str(proc.log_path)})
    return infos


def _say_accounts(dev: Devnet, say: Callable[[str], None]) -> None:
    """Prints the dApp accounts (address and key) and which accounts are the deployer's and the node's."""
    accounts = dev_accounts()
    balance = dev.w3.eth.get_balance(accounts[-1]["address"]) / 10**18
    say(f"devnet: development accounts for dApp scripts ({balance:,.0f} ETH each). {KEYS_WARNING}.")
    for account in accounts:
        if account_role(account["index"]) == "dapp":
            say(f"  ({account['index']}) {account['address']}  private key {account['private_key']}")
    say(
        f"devnet: account (0) {accounts[0]['address']} deployed and owns the contracts; account (1) "
        f"{accounts[1]['address']} is the node's: send nothing from it (its nonces are the node's)"
    )


def run_devnet(
    *,
    once: bool,
    text: str,
    workdir: Path,
    models: Sequence[str] = DEFAULT_DEVNET_MODELS,
    say: Callable[[str], None] = _say,
    port: int | None = None,
    out: Path | None = None,
    examples: bool = True,
    nodes: int = 1,
) -> int:
    """`infera devnet` (the order is in the module's docstring), each step told through `say`. `models`: keys of
    `DEVNET_MODELS`; `port`: anvil's port (`choose_rpc_port`); `out`: where devnet.json goes (default
    `<workdir>/devnet.json`); `examples`: send the example requests; `nodes`: how many staked nodes serve the models
    (1 to `MAX_NODES`; each its own process, key, config and store). With `once`, returns 0 once ready (after the
    examples); otherwise runs until Ctrl-C, SIGTERM or SIGHUP (raised as `KeyboardInterrupt`). Raises `DevnetError`
    when a model is unknown, another devnet holds `workdir`, `out` cannot be written, the port is taken, a step fails
    or a process exits; `TimeoutError` when the node is not
    ready within 120 s or an example's answer does not come in time (120 s for the classifier, 180 s for the LLMs);
    every process is stopped either way."""
    keys = check_models(models)
    if not 1 <= nodes <= MAX_NODES:
        raise DevnetError(f"--nodes {nodes}: choose 1 to {MAX_NODES}")
    workdir = workdir.absolute()  # its children start from the checkout's root, the caller may be anywhere
    out = (out or workdir / "devnet.json").absolute()
    with _stop_signals_as_interrupt(), hold_workdir(workdir), hold_out(out, workdir):
        check_writable(out)
        rpc_port, port_note = choose_rpc_port(port)
        with _removed_when_stopped(out) as manifest_written, Devnet(workdir, rpc_port=rpc_port) as dev:
            return _run(
                dev,
                keys,
                once=once,
                text=text,
                out=out,
                examples=examples,
                port_note=port_note,
                say=say,
                manifest_written=manifest_written,
                nodes=nodes,
            )


def _run(
    dev: Devnet,
    keys: Sequence[str],
    *,
    once: bool,
    text: str,
    out: Path,
    examples: bool,
    port_note: str | None,
    say: Callable[[str], None],
    manifest_written: Callable[[], None],
    nodes: int,
) -> int:
    """`run_devnet` once the work folder is held and `--out` checked: starts everything in `dev`."""
    workdir = dev.workdir
    started = time.monotonic()
    if port_note:
        say(port_note)
    dev.start_anvil(*(["--accounts", str(EXTRA_NODE_INDEX + nodes - 1)] if nodes > 1 else []))
    chain_id = dev.w3.eth.chain_id
    say(f"devnet: anvil on {dev.rpc_url} (chain {chain_id})")
    forge_build()
    deployment = dev.deploy()
    assert deployment.attestation_verifier is not None
    assert deployment.reexecution_verifier is not None
    assert dev.abi is not None  # deploy() loads it: the Coordinator's with the consensus entries, as the node reads it
    subscriptions = deployment.subscriptions.address if deployment.subscriptions is not None else "-"
    say(
        f"devnet: Coordinator {deployment.coordinator.address}, node {dev.node_account.address} staked in "
        f"NodeRegistry {deployment.registry.address}, SubscriptionManager {subscriptions}, SentimentConsumer "
        f"{deployment.consumer.address} (asks {DEFAULT_MODEL})"
    )
    say(
        f"devnet: verifiers approved: AttestationVerifier {deployment.attestation_verifier.address}, "
        f"ReexecutionVerifier {deployment.reexecution_verifier.address}"
    )
    say(
        f"devnet: minFailureReports = {DEVNET_MIN_FAILURE_REPORTS}: one node's failure report ends a failing "
        "request at once (mainnet default 2)"
    )
    consumers = _deploy_examples(dev, keys, say)
    containers = _start_containers(dev, keys, say)
    names = [DEVNET_MODELS[k].name for k in keys]
    table: dict[str, str | dict[str, Any]] = {
        DEVNET_MODELS[k].name: {"url": u, "timeout_s": 120} for k, (_, u) in containers.items()
    }
    node_infos = _start_nodes(dev, nodes, table, names, say)
    alive = _alive(dev.procs)
    if examples:
        _ask_examples(dev, keys, consumers, text, alive, say)
    served = [
        Served(
            k,
            DEVNET_MODELS[k].name,
            containers[k][1],
            [e.key for e in DEVNET_MODELS[k].examples],
            container_wire(containers[k][1]),
        )
        for k in keys
    ]
    document = manifest(
        chain_id=chain_id,
        rpc_url=dev.rpc_url,
        ws_url=dev.ws_url,
        deployment=deployment,
        coordinator_abi=dev.abi.abi if dev.abi is not None else list(deployment.coordinator.abi),
        example_model=DEFAULT_MODEL,
        examples=consumers,
        served=served,
        nodes=node_infos,
    )
    write_manifest(out, document)
    manifest_written()
    _say_accounts(dev, say)
    say(f"devnet: chain id, RPC, contract addresses and ABIs, models and accounts in {out}")
    if once:
        say(f"devnet: done in {time.monotonic() - started:.1f} s")
        return 0
    say(
        f"devnet: ready in {time.monotonic() - started:.1f} s: RPC {dev.rpc_url} (chain {chain_id}), models "
        f"{', '.join(names)}; logs in {workdir}. Ctrl-C, SIGTERM or SIGHUP stops everything."
    )
    while True:
        alive()
        time.sleep(0.5)
