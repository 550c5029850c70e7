"""`infera devnet`: the whole system, one request from an example consumer per model served, and the answers.

Models (`--model`, repeatable, default `classify` and `llm`): `classify` (MiniLM sentiment; the SentimentConsumer
asks), `llm` (the packaged SmolLM2 instruct model; LLMModeration asks yes/no from allowed values and LLMScore a
1-10 integer), `embed` (MiniLM sentence embeddings; served, no example request).

Guarantees: SIGTERM unwinds like Ctrl-C, so every process the devnet started is stopped however the command ends.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.chain.contracts import model_id
from node.devnet.deployment import DEFAULT_FEE_WEI, DEVNET_MIN_FAILURE_REPORTS
from node.devnet.processes import DevnetError, forge_build, wait_until
from node.devnet.system import Devnet


@dataclass(frozen=True)
class DevnetModel:
    """A model server the devnet can start: its on-chain name, its module and arguments, and what it loads."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    loads: str = ""


#: What `infera devnet --model KEY` serves.
DEVNET_MODELS = {
    "classify": DevnetModel("classify/minilm-sentiment@1", "containers.classify", loads="MiniLM"),
    "llm": DevnetModel(
        "llm/smollm2-135m-instruct@1", "containers.llm", ("--max-context", "1024"), loads="SmolLM2-135M-Instruct"
    ),
    "embed": DevnetModel("embed/minilm-l6@1", "containers.embed", loads="MiniLM"),
}
DEFAULT_DEVNET_MODELS = ("classify", "llm")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the `with Devnet` block still stops every child."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: What the devnet asks the LLM to moderate.
SPAM_TEXT = "WIN a FREE iPhone!!! Click here now to claim your prize"


def _ask_llm(dev: Devnet, node: Any, text: str, say: Callable[[str], None]) -> None:
    """Deploys LLMModeration and LLMScore, asks the first whether `SPAM_TEXT` is spam and the second to score
    `text`, and says the answers stored on-chain."""
    assert dev.deployment is not None
    llm = DEVNET_MODELS["llm"].name
    moderation = dev._deploy("LLMModeration", dev.deployment.coordinator.address, model_id(llm))
    score = dev._deploy("LLMScore", dev.deployment.coordinator.address, model_id(llm))
    say(f"devnet: LLMModeration {moderation.address}, LLMScore {score.address} (model {llm})")
    verdict_id = dev.request_id_of(dev._transact(moderation.functions.check(SPAM_TEXT), dev.user, DEFAULT_FEE_WEI))
    score_id = dev.request_id_of(dev._transact(score.functions.score(text), dev.user, DEFAULT_FEE_WEI))
    say(f'devnet: asked the LLM whether "{SPAM_TEXT}" is spam, yes or no (request {verdict_id})')
    say(f'devnet: asked the LLM to score "{text}" from 1 to 10 (request {score_id})')
    verdict = wait_until(
        lambda: (v := moderation.functions.verdicts(verdict_id).call()) and (v[0] or v[2]) and v,
        timeout_s=180,
        what=f"the moderation verdict of request {verdict_id}",
        alive=node.check_alive,
    )
    value = wait_until(
        lambda: score.functions.scores(score_id).call() or score.functions.failed(score_id).call() or None,
        timeout_s=180,
        what=f"the score of request {score_id}",
        alive=node.check_alive,
    )
    spam = "failed" if verdict[2] else ("yes" if verdict[1] else "no")
    scored = "failed" if value is True else f"{value}/10"
    say(f"on-chain result: request {verdict_id} spam={spam}; request {score_id} score={scored}")


def run_devnet(
    *,
    once: bool,
    text: str,
    workdir: Path,
    models: Sequence[str] = DEFAULT_DEVNET_MODELS,
    say: Callable[[str], None] = print,
) -> int:
    """`infera devnet`: the whole system, one request from the example consumer, its on-chain answer, each step
    told through `say`. With `once`, returns 0 after the answer; otherwise runs until Ctrl-C or SIGTERM (raised as
    `KeyboardInterrupt`). Raises `DevnetError` when a step fails or a process exits, `TimeoutError` when an answer
    does not come in time (120 s for the classifier, 180 s for the LLM); every process is stopped either way.
    `models`: keys of `DEVNET_MODELS`."""
    unknown = [m for m in models if m not in DEVNET_MODELS]
    if unknown or not models:
        raise DevnetError(f"unknown model {', '.join(unknown) or '(none)'}: choose from {', '.join(DEVNET_MODELS)}")
    with _sigterm_as_interrupt(), Devnet(workdir) as dev:
        started = time.monotonic()
        dev.start_anvil()
        say(f"devnet: anvil on {dev.rpc_url} (chain {dev.w3.eth.chain_id})")
        forge_build()
        deployment = dev.deploy()
        say(
            f"devnet: Coordinator {deployment.coordinator.address}, SentimentConsumer "
            f"{deployment.consumer.address}, node {dev.node_account.address} staked in NodeRegistry "
            f"{deployment.registry.address}"
            + (
                f", SubscriptionManager {deployment.subscriptions.address}"
                if deployment.subscriptions is not None
                else ""
            )
        )
        assert deployment.attestation_verifier is not None
        assert deployment.reexecution_verifier is not None
        say(
            f"devnet: verifiers approved: AttestationVerifier {deployment.attestation_verifier.address}, "
            f"ReexecutionVerifier {deployment.reexecution_verifier.address} (addresses in {workdir}/deployment.json)"
        )
        say(
            f"devnet: minFailureReports = {DEVNET_MIN_FAILURE_REPORTS}: one node's failure report ends a failing "
            "request at once (mainnet default 2)"
        )
        urls = {}
        for key in dict.fromkeys(models):
            served = DEVNET_MODELS[key]
            t0 = time.monotonic()
            say(f"devnet: starting the {served.name} container (loads {served.loads})…")
            _, urls[served.name] = dev.start_container(served.module, *served.args, name=key, timeout_s=300)
            say(f"devnet: container ready on {urls[served.name]} in {time.monotonic() - t0:.1f} s")
        node = dev.start_node(dev.write_node_config({n: {"url": u, "timeout_s": 120} for n, u in urls.items()}))
        say(f"devnet: node started (log: {node.log_path}; config: {workdir}/node.toml)")
        say(f"devnet: dApp account {dev.user.address} (funded; anvil's default account 2, counting from 0)")
        if "classify" in models:
            request_id = dev.ask_sentiment(text)
            say(f'devnet: asked for the sentiment of "{text}" as request {request_id}')
            label, score = dev.wait_sentiment(request_id, timeout_s=120, alive=node.check_alive)
            say(
                f"on-chain result: request {request_id} label={label} scoreE6={score} "
                f"(score {score / 1e6:.4f}) after {time.monotonic() - started:.1f} s"
            )
        if "llm" in models:
            _ask_llm(dev, node, text, say)
        say(f"devnet: done in {time.monotonic() - started:.1f} s")
        if once:
            return 0
        say(f"devnet: running; RPC {dev.rpc_url}, logs in {workdir}. Ctrl-C stops everything.")
        while True:
            node.check_alive()
            time.sleep(0.5)
