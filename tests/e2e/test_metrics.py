"""`/metrics` of a node process on a real anvil, after it delivered requests through the echo container; and the
Grafana dashboard queries only names that scrape has."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from node.devnet import ROOT, Devnet, Proc, wait_until

pytestmark = pytest.mark.e2e

MODEL = "echo"
REQUESTS = 5
DASHBOARD = ROOT / "config" / "grafana-dashboard.json"


@dataclass
class EchoNode:
    dev: Devnet
    node: Proc
    api: str
    request_ids: list[int]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
        return body


def status(api: str) -> dict[str, Any] | None:
    try:
        answer: dict[str, Any] = json.loads(get(f"{api}/status"))
    except OSError:
        return None
    return answer


@contextmanager
def echo_node(workdir: Path, requests: int = REQUESTS) -> Iterator[EchoNode]:
    """Anvil, the contracts, `python -m containers.echo` and the node as a process; `requests` requests sent one by
    one and delivered on-chain, and every one of them settled in the node's store."""
    with Devnet(workdir, model_name=MODEL) as dev:
        dev.start_anvil()
        dev.deploy()
        _, url = dev.start_container("containers.echo")
        node = dev.start_node(dev.write_node_config({MODEL: url}))
        api = f"http://127.0.0.1:{dev.api_port}"
        wait_until(lambda: status(api), timeout_s=60, what="the node's /status", alive=node.check_alive)
        ids = [dev.request_raw(MODEL, f"hello {i}".encode()) for i in range(requests)]

        def settled() -> bool:
            answer = status(api)
            return answer is not None and answer["jobs"]["confirmed"] == requests

        wait_until(settled, timeout_s=60, what=f"{requests} jobs confirmed", interval_s=0.1, alive=node.check_alive)
        assert all(dev.is_fulfilled(i) for i in ids)
        yield EchoNode(dev, node, api, ids)


@pytest.fixture(scope="module")
def echo(contracts_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoNode]:
    with echo_node(tmp_path_factory.mktemp("metrics")) as system:
        yield system


def scrape(api: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `/metrics`: (name, sorted labels) → value."""
    text = get(f"{api}/metrics").decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_after_deliveries(echo: EchoNode) -> None:
    w3, address = echo.dev.w3, echo.dev.node_account.address
    samples = scrape(echo.api)
    assert value(samples, "infera_jobs", state="confirmed") == REQUESTS
    assert value(samples, "infera_jobs", state="failed") == 0
    assert value(samples, "infera_delivery_latency_seconds_count") == REQUESTS
    assert 0 < value(samples, "infera_delivery_latency_seconds_sum") < REQUESTS * 30
    assert value(samples, "infera_container_seconds_count", model=MODEL, outcome="ok") == REQUESTS
    assert value(samples, "infera_tx_confirmation_seconds_count") >= 1
    calls = {dict(labels)["method"]: v for (name, labels), v in samples.items() if name == "infera_rpc_calls_total"}
    assert calls["eth_call"] >= value(samples, "infera_txs_sent_total") >= 1  # each transaction is simulated first
    assert calls["eth_getBalance"] >= 1  # the balance reads are counted too
    assert value(samples, "infera_gas_used_total") > 0
    assert value(samples, "infera_gas_spent_wei_total") > 0
    assert value(samples, "infera_chain_head_block") == w3.eth.block_number
    assert 0 <= value(samples, "infera_listener_lag_blocks") < 20  # within api.max_lag_blocks: the node is ready
    assert value(samples, "infera_container_healthy", model=MODEL) == 1
    assert value(samples, "infera_queue_depth", queue="compute") == 0
    assert value(samples, "infera_queue_depth", queue="send") == 0
    assert value(samples, "infera_txs_in_flight") == 0

    # The balance follows the node's own spending at once (and is re-read every 15 s): equal to anvil's.
    def balance_matches() -> bool:
        gauge = scrape(echo.api).get(("infera_wallet_balance_wei", (("address", address),)))
        return gauge == float(w3.eth.get_balance(address))

    wait_until(balance_matches, timeout_s=40, what="the balance gauge to equal eth_getBalance", interval_s=0.2)


ALERTS = ROOT / "config" / "alerts.yml"
#: Suffixes of the samples a family of each type exposes (prometheus_client's text format).
SAMPLE_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


def dashboard_metric_names() -> set[str]:
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            exprs.extend(v for k, v in node.items() if k in ("expr", "query", "definition") and isinstance(v, str))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(DASHBOARD.read_text()))
    return {name for expr in exprs for name in re.findall(r"\binfera_[A-Za-z0-9_:]+", expr)}


def alert_metric_names() -> set[str]:
    """The infera_* names config/alerts.yml's expressions read (`up` and the functions are Prometheus')."""
    exprs = [rule["expr"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    return {name for expr in exprs for name in re.findall(r"\binfera_[A-Za-z0-9_:]+", expr)}


def exported_names(api: str) -> set[str]:
    """Every sample name `/metrics` can have, also of families with no sample yet (a labelled counter nothing has
    counted), from their `# TYPE` lines."""
    text = get(f"{api}/metrics").decode()
    names = {name for name, _ in scrape(api)}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        names.add(name)
        names.update(name + suffix for suffix in SAMPLE_SUFFIXES.get(kind, ()))
    return names


def test_dashboard_and_alerts_query_only_exported_names(echo: EchoNode) -> None:
    """config/grafana-dashboard.json and config/alerts.yml read only names a running node exports."""
    dashboard, alerts = dashboard_metric_names(), alert_metric_names()
    assert len(dashboard) >= 15, dashboard  # the walk found the panels' queries
    assert len(alerts) >= 8, alerts
    exported = exported_names(echo.api)
    assert dashboard <= exported, (
        f"the dashboard queries names the node does not export: {sorted(dashboard - exported)}"
    )
    assert alerts <= exported, f"the alert rules read names the node does not export: {sorted(alerts - exported)}"
