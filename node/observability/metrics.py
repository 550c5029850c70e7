"""The node's Prometheus metrics, in a registry of its own (names prefixed `infera_`).

Guarantees:
- Figures the node already keeps (jobs by state from the store, RPC calls by method, queues, transactions in flight,
  reorgs, listener lag, chain head, container health) are read when `/metrics` is scraped, never copied on the hot
  path; a job costs at most one `observe()` per histogram it appears in.
- The wallet balance is read with `eth_getBalance` (through the `RpcPool`, so it is counted) every
  `BALANCE_REFRESH_S`, pinned to the newest head the node knows. Between reads it is lowered by the fee of each of the
  node's own transactions mined after that head (gas used x effective gas price), so it is exact as long as nothing
  else moves the wallet's ether (the coordinator pays nodes by `withdraw`, never by a push), and each read corrects
  any drift (a transfer, an L1 data fee).
- A failed balance read is logged and retried on the next round; it never stops the node.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from eth_typing import ChecksumAddress
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.observability.conditions import CONDITIONS

if TYPE_CHECKING:
    from node.chain.rpc import RpcPool
    from node.jobs.store import JobStore

log = logging.getLogger(__name__)

BALANCE_REFRESH_S = 15.0
#: A balance at or above this is an RPC's absurd answer (all the ether there is is below 2^87 wei), not recorded.
MAX_BALANCE_WEI = 2**96
RECENT_FEES = 1024
#: Job states always exported (0 when empty), so a dashboard's series do not come and go.
JOB_STATES = ("seen", "running", "computed", "submitted", "confirmed", "failed", "expired", "orphaned", "skipped")

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
CONTAINER_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CONFIRMATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 12, 30, 60, 120, 300, 600)


class _Head(Protocol):
    @property
    def number(self) -> int: ...


class _SeesHeads(Protocol):
    """What the metrics read of a part that follows the chain's heads (the chain head gauge is the newest of them)."""

    @property
    def head(self) -> _Head | None:
        """The newest block the part has seen (None before the first)."""


class WatchedListener(_SeesHeads, Protocol):
    """What the metrics read of the listener (`node.chain.listener.Listener`)."""

    @property
    def lag_blocks(self) -> int:
        """Blocks between the confirmed head and the listener's cursor."""

    @property
    def reorgs(self) -> int:
        """Chain reorganisations found since start."""


class WatchedScheduler(Protocol):
    """What the metrics read of the scheduler (`node.jobs.scheduler.Scheduler`)."""

    @property
    def waiting(self) -> int:
        """Jobs waiting for a compute slot now."""

    @property
    def skipped(self) -> Mapping[tuple[str, str], int]:
        """Requests skipped by the fee policy since start, by (model, reason)."""


class WatchedSender(_SeesHeads, Protocol):
    """What the metrics read of the transaction manager (`node.chain.tx.TxManager`)."""

    @property
    def backing_off(self) -> int:
        """Jobs waiting out a back-off before a send, now."""

    @property
    def in_flight(self) -> int:
        """Transactions signed and not yet settled, now."""

    @property
    def queued(self) -> int:
        """Jobs waiting to be put in a transaction, now."""

    @property
    def replaced(self) -> int:
        """Transactions re-signed with higher fees or re-carried since start."""

    @property
    def sent(self) -> int:
        """Delivery transactions signed since start (replacements not included)."""


class WatchedHealth(Protocol):
    """What the metrics read of the node's health (`node.observability.health.Health`)."""

    @property
    def containers(self) -> dict[str, bool]:
        """Model name → whether its container answered the last health probe."""


@dataclass(frozen=True)
class WatchedParts:
    """The node's parts the metrics read at scrape time, each through what its protocol above names."""

    store: JobStore
    rpc: RpcPool
    listener: WatchedListener
    scheduler: WatchedScheduler
    txm: WatchedSender
    health: WatchedHealth


@dataclass
class Balance:
    """A wallet's balance in wei, as read at block `as_of_block` (None: read at "latest") and lowered since."""

    wei: int
    as_of_block: int | None


#: What became of a subscription interval, as `infera_subscription_intervals` counts it.
INTERVAL_OUTCOMES = ("served", "skipped", "failed")
#: How a consensus request ends for a node that committed to it (node/chain/consensus.py).
CONSENSUS_OUTCOMES = ("agreed", "dissented", "late", "no_quorum")


class Metrics:
    """What the node observes (histograms, gas counters, balances) plus, once `watch` is called, what it reads at
    scrape time. Pass one to the scheduler and the transaction manager; without one they observe nothing. It imports
    neither: what it reads of them is the `Watched*` protocols below."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.delivery_latency = Histogram(
            "infera_delivery_latency_seconds",
            "Seconds from when the node saw a request's log (or resumed its job after a restart) to when its"
            " delivery was mined and `confirmations` deep; delivered requests only. Block-time before the node saw"
            " it is not included: this is the part the node controls.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.container_seconds = Histogram(
            "infera_container_seconds",
            "Seconds one call to a model container took, per attempt (outcome: ok, or error for a 4xx/5xx,"
            " timeout or malformed answer; refused connections are not timed).",
            ["model", "outcome"],
            buckets=CONTAINER_BUCKETS_S,
            registry=r,
        )
        self.confirmation_seconds = Histogram(
            "infera_tx_confirmation_seconds",
            "Seconds from signing a transaction (its latest replacement, if it was bumped) to its receipt.",
            buckets=CONFIRMATION_BUCKETS_S,
            registry=r,
        )
        self.gas_used = Counter(
            "infera_gas_used", "Gas used by the node's mined transactions (from their receipts).", registry=r
        )
        self.gas_spent_wei = Counter(
            "infera_gas_spent_wei",
            "Wei paid for gas by the node's mined transactions (gas used x effective gas price, from receipts).",
            registry=r,
        )
        self.api_jobs = Counter(
            "infera_api_jobs",
            "Jobs of the HTTP API that finished, by kind (offchain, delegated) and status (completed, failed).",
            ["kind", "status"],
            registry=r,
        )
        self.pipeline_stages = Counter(
            "infera_pipeline_stages",
            "Stages of pipeline calls that ended, by pipeline, stage (the stage's model) and outcome: ok, refused"
            " (a 4xx: the job fails naming the stage) or failed (out of attempts or time). Retries within a stage"
            " are not counted here: infera_container_seconds times each attempt, by the stage's model.",
            ["pipeline", "stage", "outcome"],
            registry=r,
        )
        self.subscription_intervals = Counter(
            "infera_subscription_intervals",
            "Subscription intervals by outcome: served (delivered and confirmed), skipped (over, full or already"
            " served before this node could deliver, or missed while it was down), failed (container or refusal).",
            ["outcome"],
            registry=r,
        )
        self.consensus_outcomes = Counter(
            "infera_consensus_outcomes",
            "Consensus requests this node committed to, by how they ended for it: agreed (its output reached the"
            " quorum: paid), dissented (the quorum agreed on another output: unpaid, named on-chain), late (the quorum"
            " was reached before its reveal: unpaid), no_quorum (closed without one).",
            ["outcome"],
            registry=r,
        )
        for outcome in CONSENSUS_OUTCOMES:
            self.consensus_outcomes.labels(outcome)
        for outcome in INTERVAL_OUTCOMES:
            self.subscription_intervals.labels(outcome)
        for kind in ("offchain", "delegated"):  # exported at 0 from the start, so rates and alerts have a series
            for status in ("completed", "failed"):
                self.api_jobs.labels(kind, status)
        self._balance_gauge = Gauge(
            "infera_wallet_balance_wei",
            f"Ether balance of each node key in wei (eth_getBalance every {BALANCE_REFRESH_S:.0f} s, lowered by"
            " the node's own gas spending in between).",
            ["address"],
            registry=r,
        )
        #: By checksum address; the status page shows these.
        self.balances: dict[str, Balance] = {}
        #: (block, fee in wei) of each address's latest mined transactions, to re-apply after a pinned read.
        self._recent_fees: dict[str, collections.deque[tuple[int, int]]] = {}
        #: The newest block number the node knows (the listener's head, or the sender's before the listener has one).
        self._head: Callable[[], int | None] = lambda: None

    # ---------------------------------------------------------------------------------------- observations

    def observe_api_job(self, kind: str, status: str) -> None:
        """Counts one finished job of the HTTP API: `kind` "offchain" or "delegated", `status` "completed" or
        "failed"."""
        self.api_jobs.labels(kind, status).inc()

    def count_interval(self, outcome: str, n: int = 1) -> None:
        """Counts `n` subscription intervals that ended as `outcome` (one of `INTERVAL_OUTCOMES`)."""
        self.subscription_intervals.labels(outcome).inc(n)

    def observe_container(self, model: str, seconds: float, *, ok: bool) -> None:
        """Times one call to `model`'s container, in seconds, as outcome "ok" or "error"."""
        self.container_seconds.labels(model, "ok" if ok else "error").observe(seconds)

    def count_consensus(self, outcome: str) -> None:
        """Counts one consensus request that ended for this node as `outcome` (one of `CONSENSUS_OUTCOMES`)."""
        self.consensus_outcomes.labels(outcome).inc()

    def count_stage(self, pipeline: str, stage: str, outcome: str) -> None:
        """Counts one stage call of `pipeline` that ended: `stage` the stage's model, `outcome` "ok", "refused" or
        "failed"."""
        self.pipeline_stages.labels(pipeline, stage, outcome).inc()

    def observe_mined(self, seconds: float) -> None:
        """Seconds from signing a transaction (its latest replacement) to its receipt."""
        self.confirmation_seconds.observe(seconds)

    def observe_delivered(self, seconds: float) -> None:
        """Seconds from seeing a request (or resuming its job) to its delivery being mined and confirmed."""
        self.delivery_latency.observe(seconds)

    def observe_receipt(self, sender: str, receipt: Mapping[str, Any]) -> None:
        """Gas of one of the node's mined transactions (counted once per transaction: the caller's promise)."""
        gas = int(receipt["gasUsed"])
        self.gas_used.inc(gas)
        price = receipt.get("effectiveGasPrice")
        if price is None:
            return
        fee, block = gas * int(price), int(receipt["blockNumber"])
        self.gas_spent_wei.inc(fee)
        self._recent_fees.setdefault(sender, collections.deque(maxlen=RECENT_FEES)).append((block, fee))
        balance = self.balances.get(sender)
        if balance is not None and balance.as_of_block is not None and block > balance.as_of_block:
            balance.wei -= fee
            self._balance_gauge.labels(sender).set(balance.wei)

    # -------------------------------------------------------------------------------------------- scraping

    def watch(self, parts: WatchedParts) -> None:
        """Registers the collector that reads the node's parts at scrape time (call once)."""
        self._head = lambda: max(
            (h.number for h in (parts.listener.head, parts.txm.head) if h is not None), default=None
        )
        self.registry.register(_NodeCollector(parts))

    # -------------------------------------------------------------------------------------------- balances

    async def watch_balances(
        self, rpc: RpcPool, addresses: Sequence[ChecksumAddress], interval_s: float = BALANCE_REFRESH_S
    ) -> None:
        """Reads every address's balance now and then every `interval_s`, until cancelled."""
        while True:
            for address in addresses:
                try:
                    await self.refresh_balance(rpc, address)
                except Exception as exc:  # an absurd answer (a balance no float holds): a metric never stops the node
                    log.warning("cannot record the balance of %s: %s", address, exc)
            await asyncio.sleep(interval_s)

    async def refresh_balance(self, rpc: RpcPool, address: ChecksumAddress) -> None:
        """Reads one balance at the newest block the node knows, then applies the fees of its transactions mined
        above that block (those already seen and, through `observe_receipt`, those still to come)."""
        block = self._head()
        try:
            wei = int(
                await rpc.call(
                    "eth_getBalance", lambda w3: w3.eth.get_balance(address, "latest" if block is None else block)
                )
            )
        except Exception as exc:  # a metric must never stop the node
            log.warning("cannot read the balance of %s: %s", address, exc)
            return
        if not 0 <= wei < MAX_BALANCE_WEI:
            log.warning("the RPC says %s holds %d wei: not believed, not recorded", address, wei)
            return
        if block is not None:  # receipts of later blocks that came in while the read was under way
            wei -= sum(fee for b, fee in self._recent_fees.get(address, ()) if b > block)
        self.balances[address] = Balance(wei, block)
        self._balance_gauge.labels(address).set(wei)


class _NodeCollector(Collector):
    """Figures read from the node's parts when scraped."""

    def __init__(self, parts: WatchedParts) -> None:
        self._parts = parts

    def describe(self) -> Iterable[Metric]:
        return self._families(empty=True)

    def collect(self) -> Iterable[Metric]:
        return self._families(empty=False)

    def _families(self, *, empty: bool) -> list[Metric]:
        jobs = GaugeMetricFamily(
            "infera_jobs", "Jobs in the store by state (this chain and coordinator).", labels=["state"]
        )
        calls = CounterMetricFamily(
            "infera_rpc_calls", "JSON-RPC calls made through the RPC pool, by method.", labels=["method"]
        )
        queue = GaugeMetricFamily(
            "infera_queue_depth",
            "Jobs waiting: for a compute slot (queue=compute) or to be put in a transaction (queue=send).",
            labels=["queue"],
        )
        in_flight = GaugeMetricFamily("infera_txs_in_flight", "The node's transactions signed and not yet settled.")
        sent = CounterMetricFamily("infera_txs_sent", "Delivery transactions signed (replacements not included).")
        replaced = CounterMetricFamily("infera_txs_replaced", "Transactions re-signed with higher fees or re-carried.")
        reorgs = CounterMetricFamily("infera_reorgs", "Chain reorganisations the listener found.")
        duplicates = CounterMetricFamily("infera_duplicate_requests", "Request logs seen again and dropped.")
        skipped = CounterMetricFamily(
            "infera_requests_skipped",
            "Requests not served because of the model's fee policy (reason: token_not_accepted, fee_below_minimum),"
            " since start; no gas is spent on them.",
            labels=["model", "reason"],
        )
        lag = GaugeMetricFamily(
            "infera_listener_lag_blocks", "Blocks between the confirmed head and the listener's cursor."
        )
        head = GaugeMetricFamily("infera_chain_head_block", "Number of the newest block the listener heard of.")
        containers = GaugeMetricFamily(
            "infera_container_healthy",
            "1 when the model's container (or worker pool) answers its health probe.",
            labels=["model"],
        )
        answers = CounterMetricFamily(
            "infera_outside_answers",
            "Answers from outside the node that were not a plain success, by source (rpc, ws, send, container) and"
            " the action taken (retry, refused, key_blocked, unhealthy, unknown; docs/RELIABILITY.md).",
            labels=["source", "action"],
        )
        conditions = GaugeMetricFamily(
            "infera_condition",
            "1 for each current problem of a subject (a key that cannot send, a stale WebSocket, a rate-limiting"
            " container, receipts that cannot be checked); what it is shows on /readyz and /status.",
            labels=["subject"],
        )
        backing_off = GaugeMetricFamily("infera_jobs_backing_off", "Jobs waiting out a back-off before a send.")
        families: list[Metric] = [
            answers,
            conditions,
            backing_off,
            jobs,
            calls,
            queue,
            in_flight,
            sent,
            replaced,
            reorgs,
            duplicates,
            skipped,
            lag,
            head,
            containers,
        ]
        if empty:
            return families
        p = self._parts
        for (source, action), n in sorted(CONDITIONS.answers.items()):
            answers.add_metric([source, action], n)
        for problem in CONDITIONS.problems():
            conditions.add_metric([problem.split(": ", 1)[0]], 1)
        backing_off.add_metric([], p.txm.backing_off)
        counts = p.store.counts()
        for state in (*JOB_STATES, *sorted(set(counts) - set(JOB_STATES))):
            jobs.add_metric([state], counts.get(state, 0))
        for method, n in sorted(p.rpc.calls.items()):
            calls.add_metric([method], n)
        queue.add_metric(["compute"], p.scheduler.waiting)
        queue.add_metric(["send"], p.txm.queued)
        in_flight.add_metric([], p.txm.in_flight)
        sent.add_metric([], p.txm.sent)
        replaced.add_metric([], p.txm.replaced)
        reorgs.add_metric([], p.listener.reorgs)
        duplicates.add_metric([], p.store.duplicates)
        for (model, reason), n in sorted(p.scheduler.skipped.items()):
            skipped.add_metric([model, reason], n)
        lag.add_metric([], p.listener.lag_blocks)
        if p.listener.head is not None:
            head.add_metric([], p.listener.head.number)
        for model, healthy in sorted(p.health.containers.items()):
            containers.add_metric([model], 1 if healthy else 0)
        return families
