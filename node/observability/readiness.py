"""Metrics of whether the node can earn, read at scrape time: readiness and each of its checks, the keys' stake,
active state and the deliveries their balance pays for, the fees earned, the jobs finished, and the build and start
time. The example alert rules (config/prometheus/alerts.yml) and Grafana panels use these names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from node.config import ETH_TOKEN
from node.jobs.states import TERMINAL
from node.jobs.store import JobStore
from node.observability.health import CHECKS, Health

log = logging.getLogger(__name__)


def token_label(token: str) -> str:
    """`ETH` for the zero address, else the token's checksummed address (the `token` label)."""
    return "ETH" if token.lower() == ETH_TOKEN else token


class ReadinessCollector(Collector):
    """Exports, at each scrape (wei as floats: exact to about 2^53 wei, 0.009 ETH, past which Prometheus rounds):
    - `infera_ready` (1/0) and `infera_readiness_check{check}` (1 passing, 0 failing; `check` in `health.CHECKS`);
    - `infera_node_active{address}`, `infera_node_stake_wei{address}`, `infera_node_min_stake_wei`,
      `infera_wallet_deliveries_covered{address}`, `infera_gas_price_wei` (from the last standing read);
    - `infera_fees_unclaimed_wei{token}` (the coordinator's `balanceOf` for the node's keys, summed);
    - `infera_fees_earned_total{token}` (fees credited to the node by the deliveries this process settled);
    - `infera_jobs_finished_total{state}` (jobs this process moved to a final state);
    - `infera_build_info{version}` and `infera_start_time_seconds` (Unix time the process started)."""

    def __init__(self, health: Health, store: JobStore, version: str, started_at: float | None = None) -> None:
        self._health = health
        self._store = store
        self._version = version
        self._started_at = time.time() if started_at is None else started_at

    def register(self, registry: CollectorRegistry) -> None:
        """Adds this collector to `registry`."""
        registry.register(self)

    def describe(self) -> Iterable[Metric]:
        """No description ahead of a scrape: the registry then learns the names from the first `collect`."""
        return []

    def collect(self) -> Iterable[Metric]:
        """The families above, read now. A figure that cannot be read is left out of this scrape (and logged)."""
        checks = self._health.checks()
        ready = GaugeMetricFamily("infera_ready", "1 when /readyz answers 200 (every readiness check passes).")
        ready.add_metric([], 0 if any(checks.values()) else 1)
        parts = GaugeMetricFamily(
            "infera_readiness_check",
            "1 when the readiness check passes, 0 when it fails (/readyz names why): rpc, listener, containers,"
            " coordinator, stake, balance, conditions.",
            labels=["check"],
        )
        for name in CHECKS:
            parts.add_metric([name], 0 if checks.get(name) else 1)
        yield ready
        yield parts
        yield from self._standing()
        yield from self._earnings()
        finished = CounterMetricFamily(
            "infera_jobs_finished", "Jobs this process moved to a final state, by state.", labels=["state"]
        )
        for state in sorted(TERMINAL):
            finished.add_metric([str(state)], self._store.finished.get(state, 0))
        yield finished
        info = InfoMetricFamily("infera_build", "The running node's version.")
        info.add_metric([], {"version": self._version})
        yield info
        yield GaugeMetricFamily(
            "infera_start_time_seconds", "Unix time the node process started.", value=self._started_at
        )

    def _standing(self) -> Iterable[Metric]:
        standing = self._health.standing
        active = GaugeMetricFamily(
            "infera_node_active",
            "1 when the key is active in the NodeRegistry (registered, bonded, staked).",
            labels=["address"],
        )
        stake = GaugeMetricFamily(
            "infera_node_stake_wei", "The key's stake in the NodeRegistry, in wei.", labels=["address"]
        )
        covered = GaugeMetricFamily(
            "infera_wallet_deliveries_covered",
            "Deliveries the key's balance pays for at the current gas price (delivery gas: the standing's"
            " delivery_gas in /status).",
            labels=["address"],
        )
        unclaimed = GaugeMetricFamily(
            "infera_fees_unclaimed_wei",
            "Fees the Coordinator holds for the node's keys and not yet claimed (infera node claim), by token, in the"
            " token's smallest unit.",
            labels=["token"],
        )
        if standing is not None:
            for address, key in standing.keys.items():
                active.add_metric([address], 1 if key.active else 0)
                stake.add_metric([address], float(key.stake_wei))
                covered.add_metric([address], float(key.deliveries_covered))
            for token, amount in standing.unclaimed.items():
                unclaimed.add_metric([token_label(token)], float(amount))
        yield from (active, stake, covered, unclaimed)
        if standing is not None and standing.min_stake_wei is not None:
            yield GaugeMetricFamily(
                "infera_node_min_stake_wei", "The NodeRegistry's minimum stake, in wei.", value=standing.min_stake_wei
            )
        if standing is not None and standing.gas_price_wei is not None:
            yield GaugeMetricFamily(
                "infera_gas_price_wei",
                "The gas price of the last standing read (eth_gasPrice, capped).",
                value=standing.gas_price_wei,
            )

    def _earnings(self) -> Iterable[Metric]:
        earned = CounterMetricFamily(
            "infera_fees_earned",
            "Fees credited to the node by the deliveries this process settled, by payment token (ETH or the token's"
            " address), in the token's smallest unit (a counter: it starts from 0 with the process).",
            labels=["token"],
        )
        found = dict(self._store.earned)
        found.setdefault(ETH_TOKEN, 0)
        for token, amount in sorted(found.items()):
            earned.add_metric([token_label(token)], float(amount))
        yield earned
