"""`infera devnet`: the whole system, one request from the example consumer, and its on-chain answer.

Guarantees: SIGTERM unwinds like Ctrl-C, so every process the devnet started is stopped however the command ends.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from node.devnet.deployment import DEVNET_MIN_FAILURE_REPORTS
from node.devnet.processes import forge_build
from node.devnet.system import Devnet


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


def run_devnet(*, once: bool, text: str, workdir: Path, say: Callable[[str], None] = print) -> int:
    """`infera devnet`: the whole system, one request from the example consumer, its on-chain answer, each step
    told through `say`. With `once`, returns 0 after the answer; otherwise runs until Ctrl-C or SIGTERM (raised as
    `KeyboardInterrupt`). Raises `DevnetError` when a step fails or a process exits, `TimeoutError` when an answer
    does not come in time (120 s); every process is stopped either way."""
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
        t0 = time.monotonic()
        say(f"devnet: starting the {dev.model_name} container (loads MiniLM)…")
        _, url = dev.start_container()
        say(f"devnet: container ready on {url} in {time.monotonic() - t0:.1f} s")
        node = dev.start_node(dev.write_node_config({dev.model_name: url}))
        say(f"devnet: node started (log: {node.log_path})")
        request_id = dev.ask_sentiment(text)
        say(f'devnet: asked for the sentiment of "{text}" as request {request_id}')
        label, score = dev.wait_sentiment(request_id, timeout_s=120, alive=node.check_alive)
        say(
            f"on-chain result: request {request_id} label={label} scoreE6={score} "
            f"(score {score / 1e6:.4f}) after {time.monotonic() - started:.1f} s"
        )
        if once:
            return 0
        say(f"devnet: running; RPC {dev.rpc_url}, logs in {workdir}. Ctrl-C stops everything.")
        while True:
            node.check_alive()
            time.sleep(0.5)
