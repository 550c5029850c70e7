"""The operator's view of a running node: `/metrics` (Prometheus), `/status` (JSON) and `/` (a page that renders it).

Guarantees: read-only and unauthenticated, so served on the API's bind address only (127.0.0.1 by default); no
secret is shown (the RPC URL is cut to its scheme, host and port: its path or query may hold an API key). The page
is one static file with inline CSS and JS, and its Content-Security-Policy lets it load nothing but `/status` from
the node itself. A `/status` reads in-memory figures, the store's count of jobs by state and its newest rows.
"""

from __future__ import annotations

import importlib.resources
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from node import __version__
from node.chain.listener import Listener
from node.chain.rpc import public_url
from node.chain.standing import iso_utc
from node.chain.tx import TxManager
from node.config import ETH_TOKEN
from node.jobs.lease import Replica
from node.jobs.outcomes import Outcomes
from node.jobs.scheduler import Scheduler
from node.jobs.states import TERMINAL
from node.jobs.store import JobStore
from node.observability.conditions import CONDITIONS
from node.observability.health import Health
from node.observability.memory import HeapTrimmer, rss_kib
from node.observability.metrics import JOB_STATES, Metrics
from node.observability.readiness import token_label

#: Jobs listed on the page, newest first.
LATEST_JOBS = 20
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline';"
    " connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass
class StatusView:
    """What `/status` reports, read from the node's parts when asked."""

    chain_id: int
    coordinator: str
    health: Health
    listener: Listener
    store: JobStore
    scheduler: Scheduler
    txm: TxManager
    metrics: Metrics
    trimmer: HeapTrimmer
    #: This process among replicas (None: a node built without one, as in tests).
    replica: Replica | None = None
    #: Unix time the node started (for `started_at` and `uptime_s`).
    started_at: float = field(default_factory=time.time)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: version, start time and uptime (s); readiness with each check (`checks`: name → ok and its
        problems); the on-chain `standing` (node/chain/standing.py `Standing.snapshot`); `fees_earned` (token → the
        smallest units credited over the jobs the store keeps); chain; wallets (wei as strings: they exceed JSON's
        exact integers); containers (true healthy, false down, null not probed yet) and where each is; jobs by
        state, queues and the latest jobs with their latency (seen to settled, for settled ones) and ISO times; and
        the node's resident memory with what returning freed heap to the OS after bursts gave back."""
        head = self.listener.head
        checks = self.health.checks()
        problems = [line for lines in checks.values() for line in lines]
        counts = self.store.counts()
        latest = []
        for job in self.store.latest(LATEST_JOBS):
            settled = job["state"] in TERMINAL
            latest.append(
                {
                    "request_id": job["request_id"],
                    **(
                        {"subscription_id": job["subscription_id"], "interval": job["interval"]}
                        if "subscription_id" in job
                        else {}
                    ),
                    "model": job["model"],
                    "state": job["state"],
                    "latency_ms": round((job["updated_at"] - job["created_at"]) * 1000, 1) if settled else None,
                    "seen_at": job["created_at"],
                    "seen_at_iso": iso_utc(job["created_at"]),
                    "updated_at_iso": iso_utc(job["updated_at"]),
                    "tx_hash": job["tx_hash"],
                    "error": job["error"],
                    "callback_ok": None if job["callback_ok"] is None else bool(job["callback_ok"]),
                    "fee_earned": job["fee_earned"],
                    "fee_token": None if job["token"] is None else token_label(job["token"]),
                    "verification": job["verification"],
                }
            )
        wallets = []
        for address in self.txm.addresses:
            balance = self.metrics.balances.get(address)
            wallets.append(
                {
                    "address": address,
                    "balance_wei": None if balance is None else str(balance.wei),
                    "as_of_block": None if balance is None else balance.as_of_block,
                }
            )
        standing = self.health.standing
        earned = Outcomes(self.store).earned_by_token()
        earned.setdefault(ETH_TOKEN, 0)
        return {
            "time": time.time(),
            "version": __version__,
            "started_at": iso_utc(self.started_at),
            "uptime_s": round(time.time() - self.started_at, 1),
            "ready": not problems,
            "problems": problems,
            "checks": {name: {"ok": not lines, "problems": lines} for name, lines in checks.items()},
            "standing": None if standing is None else standing.snapshot(),
            "replica": None if self.replica is None else self.replica.snapshot(),
            "fees_earned": {token_label(t): str(v) for t, v in sorted(earned.items())},
            "conditions": CONDITIONS.problems(),  # everything wrong now, blocking readiness or not
            "chain": {
                "chain_id": self.chain_id,
                "coordinator": self.coordinator,
                "rpc": public_url(self.health.rpc.url),
                "head": head.number if head else None,
                "head_timestamp": head.timestamp if head else None,
                "cursor": self.listener.cursor,
                "lag_blocks": self.listener.lag_blocks,
                "reorgs": self.listener.reorgs,
            },
            "wallets": wallets,
            "containers": {name: self.health.containers.get(name) for name in self.health.probes},
            "container_urls": {name: self.health.where.get(name) for name in self.health.probes},
            "jobs": {state: counts.get(state, 0) for state in (*JOB_STATES, *sorted(set(counts) - set(JOB_STATES)))},
            "queue": {"compute": self.scheduler.waiting, "send": self.txm.queued},
            "running": self.scheduler.running,
            "txs_in_flight": self.txm.in_flight,
            "latest_jobs": latest,
            "memory": {
                "rss_mb": None if (rss := rss_kib()) is None else round(rss / 1024, 1),
                "heap_trims": self.trimmer.trims,
                "heap_returned_mb": round(self.trimmer.returned_kib / 1024, 1),
            },
        }


def add_routes(app: web.Application, view: StatusView) -> None:
    """`GET /` (the page), `GET /status` (its JSON) and `GET /metrics` (Prometheus text, or OpenMetrics if asked)."""
    page = importlib.resources.files("node.api").joinpath("static/status.html").read_bytes()

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)

    async def status(request: web.Request) -> web.Response:
        return web.json_response(view.snapshot(), headers={"Cache-Control": "no-store"})

    async def metrics(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(view.metrics.registry), headers={"Content-Type": content_type})

    app.router.add_get("/", index)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
