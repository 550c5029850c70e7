"""Ready means able to earn, on a real anvil with node processes: a wrong coordinator address stops `infera run` with
the reason; an unregistered key and a key without ETH for deliveries leave the node running but not ready, each named
in /readyz, on the status page (Chromium) and in /metrics, until `infera node register` or a top-up fixes it; then a
failed job's reason is on the page."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3.types import Wei

from bench.rpcproxy import proxy_in_thread
from node.chain.standing import DELIVERY_OVERHEAD_GAS
from node.devnet import Devnet, wait_until
from node.devnet.deployment import DEVNET_MIN_STAKE_WEI
from node.devnet.processes import Proc, free_port
from tests.e2e.test_cli import infera
from tests.e2e.test_metrics import scrape, value
from tests.e2e.test_status_page import eth, render
from tests.faults.conftest import readyz

pytestmark = pytest.mark.e2e

MODEL = "echo"
FAULTY = "faulty"
#: The largest callback gas the node accepts by default ([[models]] max_callback_gas): part of a delivery's cost.
DEFAULT_MAX_CALLBACK_GAS = 500_000


@dataclass
class Chain:
    dev: Devnet
    echo_url: str
    faulty_url: str


@pytest.fixture(scope="module")
def chain(contracts_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with Devnet(tmp_path_factory.mktemp("readiness"), model_name=MODEL) as dev:
        dev.start_anvil()
        dev.deploy()
        _, echo_url = dev.start_container("containers.echo")
        port = free_port()
        journal = dev.workdir / "faulty.journal"
        faulty = dev.start(
            "faulty",
            [sys.executable, "-m", "tests.faults.faulty_container", "--port", str(port), "--journal", str(journal)],
        )
        faulty_url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: _answers(f"{faulty_url}/health"),
            timeout_s=60,
            what="the faulty container",
            alive=faulty.check_alive,
        )
        yield Chain(dev, echo_url, faulty_url)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def answer(api: str) -> tuple[int, dict[str, Any]] | None:
    """(HTTP status, body) of /readyz at `api`; None while nothing answers."""
    try:
        return readyz(int(api.rsplit(":", 1)[1]))
    except OSError:
        return None


def fund(dev: Devnet, address: str, wei: int) -> None:
    """Sends `wei` from anvil's first account (unlocked) and waits for the receipt."""
    tx = dev.w3.eth.send_transaction({"from": dev.w3.eth.accounts[0], "to": address, "value": Wei(wei)})
    dev.w3.eth.wait_for_transaction_receipt(tx, timeout=30)


def cli(key: LocalAccount, *args: str) -> subprocess.CompletedProcess[str]:
    """`infera <args>` with `key` in INFERA_PRIVATE_KEY, as an operator runs it."""
    return infera(*args, env={"INFERA_PRIVATE_KEY": key.key.hex()}, timeout=120)


def node_with(chain: Chain, key: LocalAccount, name: str) -> tuple[Proc, str, Path]:
    """A node process for `key` serving echo and the faulty container; its API URL and config."""
    config = chain.dev.write_node_config({MODEL: chain.echo_url, FAULTY: chain.faulty_url}, name=name)
    proc = chain.dev.start_node(config, env={"INFERA_PRIVATE_KEY": key.key.hex()}, name=name)
    return proc, f"http://127.0.0.1:{chain.dev.api_port}", config


def failing(api: str, check: str, proc: Proc) -> dict[str, Any]:
    """Waits for /readyz to answer 503 with `check` failing (every other check passing); returns the body."""

    def seen() -> dict[str, Any] | None:
        got = answer(api)
        if got is None or got[0] != 503:
            return None
        body = got[1]
        bad = {name for name, c in body.get("checks", {}).items() if not c["ok"]}  # none while starting
        return body if bad == {check} else None

    body: dict[str, Any] = wait_until(seen, timeout_s=60, what=f"/readyz failing only {check}", alive=proc.check_alive)
    return body


def ready(api: str, proc: Proc) -> None:
    """Waits (the standing is re-read every 15 s) for /readyz to answer 200."""
    wait_until(lambda: (answer(api) or (0, {}))[0] == 200, timeout_s=60, what="/readyz 200", alive=proc.check_alive)


# ------------------------------------------------------------------------------------------- wrong coordinator


@pytest.mark.parametrize("which", ["no code", "registry", "subscription manager", "consumer", "other chain"])
def test_a_wrong_coordinator_or_chain_stops_infera_run_with_the_reason(chain: Chain, which: str) -> None:
    dev = chain.dev
    d = dev.deployment
    assert d is not None
    address, said = {
        "no code": ("0x" + "ab" * 20, "holds no contract"),
        "registry": (d.registry.address, "is the NodeRegistry, not the Coordinator"),
        "subscription manager": (d.subscriptions.address if d.subscriptions else "", "SubscriptionManager"),
        "consumer": (d.consumer.address, "is not an Infera Coordinator"),
        "other chain": (d.coordinator.address, "serves chain 31337, but chain.chain_id says chain 1"),
    }[which]
    extra: dict[str, Any] = {"chain_id": 1} if which == "other chain" else {}
    config = dev.write_node_config({MODEL: chain.echo_url}, name="wrong", **extra)
    text = config.read_text().replace(d.coordinator.address, address)
    config.write_text(text)
    nonce = dev.w3.eth.get_transaction_count(dev.node_account.address)
    result = cli(dev.node_account, "run", "--config", str(config))
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert said in last, last
    assert address.lower() in last.lower() or which == "other chain", last
    if which != "other chain":
        assert "infera deploy" in last  # says where the right address comes from
    assert dev.w3.eth.get_transaction_count(dev.node_account.address) == nonce  # nothing was sent
    checked = cli(dev.node_account, "config", "check", "--config", str(config), "--online")
    assert checked.returncode != 0
    assert said in checked.stdout + checked.stderr  # the online check says the same, in the same words


# ------------------------------------------------------------------------------------- keys that cannot earn


def test_an_unregistered_key_is_not_ready_until_infera_node_register(chain: Chain, tmp_path: Path) -> None:
    dev = chain.dev
    key: LocalAccount = Account.create()
    fund(dev, key.address, 2 * DEVNET_MIN_STAKE_WEI)
    proc, api, config = node_with(chain, key, "unregistered")
    body = failing(api, "stake", proc)
    (line,) = body["checks"]["stake"]["problems"]
    assert key.address in line, line
    assert "not registered" in line, line
    assert "infera node register" in line, line
    samples = scrape(api)
    assert value(samples, "infera_ready") == 0
    assert value(samples, "infera_readiness_check", check="stake") == 0
    assert value(samples, "infera_readiness_check", check="balance") == 1
    assert value(samples, "infera_node_active", address=key.address) == 0
    assert value(samples, "infera_node_stake_wei", address=key.address) == 0
    assert value(samples, "infera_node_min_stake_wei") == DEVNET_MIN_STAKE_WEI

    page = render(f"{api}/", tmp_path / "chromium")
    assert page.by_id["ready"] == "not ready"
    assert page.checks["stake"] == "failing", page.checks
    assert page.checks["rpc"] == "ok", page.checks
    assert any(key.address in why for why in page.why["stake"]), page.why
    (row,) = page.wallets
    assert (row["registry"], row["stake"]) == ("not registered", eth(0)), row

    result = cli(key, "node", "register", "--config", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    ready(api, proc)
    samples = scrape(api)
    assert value(samples, "infera_ready") == 1
    assert value(samples, "infera_node_active", address=key.address) == 1
    assert value(samples, "infera_node_stake_wei", address=key.address) == DEVNET_MIN_STAKE_WEI
    dev.stop(proc)


def test_a_key_without_eth_for_deliveries_is_not_ready_until_funded(chain: Chain, tmp_path: Path) -> None:
    dev = chain.dev
    key: LocalAccount = Account.create()
    price = int(dev.w3.eth.gas_price)
    delivery_wei = price * (DELIVERY_OVERHEAD_GAS + DEFAULT_MAX_CALLBACK_GAS)
    fund(dev, key.address, DEVNET_MIN_STAKE_WEI + 10**16)  # the stake and the registration's gas
    dev.register_node(key)
    # What is left is drained to 3 deliveries' worth: below the default api.min_deliveries_covered (10).
    left = int(dev.w3.eth.get_balance(key.address))
    drain = left - 3 * delivery_wei - 21_000 * 2 * price
    tx = key.sign_transaction(
        {
            "to": dev.w3.eth.accounts[0],
            "value": drain,
            "gas": 21_000,
            "gasPrice": 2 * price,
            "nonce": 1,
            "chainId": 31337,
        }
    )
    dev.w3.eth.wait_for_transaction_receipt(dev.w3.eth.send_raw_transaction(tx.raw_transaction), timeout=30)

    proc, api, _ = node_with(chain, key, "dry")
    body = failing(api, "balance", proc)
    (line,) = body["checks"]["balance"]["problems"]
    assert key.address in line, line
    assert "send it ETH" in line, line
    assert "min_deliveries_covered = 10" in line, line
    samples = scrape(api)
    assert value(samples, "infera_readiness_check", check="balance") == 0
    assert value(samples, "infera_wallet_deliveries_covered", address=key.address) < 10
    assert value(samples, "infera_node_active", address=key.address) == 1
    page = render(f"{api}/", tmp_path / "chromium-dry")
    assert page.checks["balance"] == "failing", page.checks
    assert any(key.address in w for w in page.why["balance"]), page.why

    fund(dev, key.address, 10**18)
    ready(api, proc)
    assert value(scrape(api), "infera_wallet_deliveries_covered", address=key.address) >= 10

    # Earning now: a delivery's fee, and a failed job's reason, on the page.
    delivered = dev.request_raw(MODEL, b"paid work")
    failed = dev.request_raw(FAULTY, b"fail500-always")

    def settled() -> dict[str, Any] | None:
        got = answer(api)
        jobs = got[1].get("jobs", {}) if got else {}
        return jobs if jobs.get("confirmed") == 1 and jobs.get("failed") == 1 else None

    wait_until(settled, timeout_s=180, what="one job confirmed and one failed", alive=proc.check_alive)
    earned = dev.deployment.coordinator.functions.balanceOf("0x" + "00" * 20, key.address).call()  # type: ignore[union-attr]
    assert earned > 0

    def shown() -> Any:
        page = render(f"{api}/", tmp_path / "chromium-earned")
        return page if page.by_id.get("earned") == eth(earned) else None

    page = wait_until(shown, timeout_s=60, what="the page to show the fee earned", alive=proc.check_alive)
    rows = {row["request"]: row for row in page.jobs}
    assert rows[str(delivered)]["state"] == "confirmed"
    assert rows[str(delivered)]["fee"] == eth(earned)
    assert rows[str(failed)]["state"] == "failed"
    assert "container failed: model blew up" in rows[str(failed)]["reason"], rows[str(failed)]  # its answer, inline
    samples = scrape(api)
    assert value(samples, "infera_fees_earned_total", token="ETH") == earned
    assert value(samples, "infera_jobs_finished_total", state="confirmed") == 1
    assert value(samples, "infera_jobs_finished_total", state="failed") == 1
    dev.stop(proc)


def test_healthz_answers_while_the_rpc_is_unreachable_at_start(chain: Chain, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = chain.dev.write_node_config({MODEL: chain.echo_url}, name="no-rpc", rpc_url=dead, ws_url="")
    proc = chain.dev.start_node(config, name="no-rpc")
    api = f"http://127.0.0.1:{chain.dev.api_port}"
    wait_until(lambda: _answers(f"{api}/healthz"), timeout_s=60, what="/healthz 200", alive=proc.check_alive)

    def said() -> tuple[int, dict[str, Any]] | None:
        got = answer(api)  # "starting: connecting to the chain" until the first try has failed
        return got if got is not None and "RPC unreachable" in str(got[1]["problems"]) else None

    status, body = wait_until(said, timeout_s=60, what="/readyz to name the RPC", alive=proc.check_alive)
    assert status == 503
    (line,) = body["problems"]
    assert dead in line, line
    page = render(f"{api}/", tmp_path / "chromium-starting")
    assert page.by_id["ready"] == "starting"
    assert dead in page.by_id["problems"], page.by_id
    assert chain.dev.stop(proc) == 0  # SIGTERM while waiting: a clean stop


def test_rpc_failures_during_the_coordinator_check_are_retried_not_taken_for_a_wrong_address(chain: Chain) -> None:
    """A 429, a JSON-RPC error that is not a revert, and an answer that is not hex, each to the start's
    typeAndVersion() call: before, each made `infera run` exit 2 blaming a right address (for good, under systemd).
    Now each is asked again, and the node starts and is ready."""
    dev = chain.dev
    selector = "0x" + keccak(text="typeAndVersion()")[:4].hex()
    bad: list[web.Response | dict[str, Any]] = [
        web.Response(status=429, text="Too Many Requests", content_type="text/plain"),
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32005, "message": "rate limit exceeded"}},
        {"jsonrpc": "2.0", "id": 1, "result": "not hex at all"},
    ]
    answered: list[str] = []

    def fault(call: dict[str, Any]) -> web.Response | None:
        params = call.get("params") or [{}]
        if call.get("method") != "eth_call" or not isinstance(params[0], dict) or params[0].get("data") != selector:
            return None
        if len(answered) >= len(bad):
            return None
        answer = bad[len(answered)]
        answered.append(str(answer))
        if isinstance(answer, web.Response):
            return answer
        return web.json_response({**answer, "id": call.get("id")})

    with proxy_in_thread(dev.rpc_port) as proxy:
        proxy.fault = fault
        config = dev.write_node_config({MODEL: chain.echo_url}, name="flaky-rpc", rpc_url=proxy.http_url, ws_url="")
        proc = dev.start_node(config, name="flaky-rpc")
        api = f"http://127.0.0.1:{dev.api_port}"

        def checking() -> bool:  # meanwhile the node answers /healthz and says what it waits for
            got = answer(api)
            return got is not None and "cannot check the coordinator" in str(got[1].get("problems"))

        wait_until(checking, timeout_s=60, what="/readyz to say it checks the coordinator", alive=proc.check_alive)
        assert _answers(f"{api}/healthz")
        ready(api, proc)
        assert len(answered) == len(bad)
        assert "is not an Infera Coordinator" not in proc.log_tail(200)
        dev.stop(proc)
