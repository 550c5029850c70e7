"""The node's HTTP endpoints: `/healthz` (the process is up) and `/readyz` (it can serve a request now).

Binds 127.0.0.1 unless configured otherwise.
"""

from __future__ import annotations

import errno
import importlib.resources
import socket
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from node.api.status import PAGE_HEADERS
from node.errors import ConfigError
from node.jobs.lease import Replica
from node.observability.health import Health

HEALTH: web.AppKey[Health] = web.AppKey("health", Health)
STATUS: web.AppKey[Any] = web.AppKey("status", object)


async def healthz(request: web.Request) -> web.Response:
    """`GET /healthz`: 200 while the process answers (liveness)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """`GET /readyz`: 200 when ready to serve, else 503 with the reasons."""
    snapshot = request.app[HEALTH].snapshot()
    snapshot.update(request.app[STATUS]())
    return web.json_response(snapshot, status=200 if snapshot["ready"] else 503)


def make_app(
    health: Health,
    status: Any,
    *,
    middlewares: Sequence[Any] = (),
    max_body_bytes: int = 1 << 20,
    setup: Sequence[Callable[[web.Application], None]] = (),
) -> web.Application:
    """`status()` adds the node's own figures (jobs by state, transactions in flight) to `/readyz`; each `setup`
    callable adds its routes (the `/v1` API, metrics, the status page)."""
    app = web.Application(middlewares=list(middlewares), client_max_size=max_body_bytes)
    app[HEALTH] = health
    app[STATUS] = status
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    for add_routes in setup:
        add_routes(app)
    return app


def waiting_app(reason: Callable[[], str], replica: Replica | None = None) -> web.Application:
    """The API while the node waits for its chain, or for the leader lease as a standby (before anything else is
    built): `/healthz` answers 200 (the process is alive), `/readyz` and `/status` 503 with `reason()` as the one
    problem (and `starting: true`, and the `replica` with its role and lease), `/` the status page (which shows that
    problem), `/metrics` the replica's role (`infera_replica_leader` 0 on a standby)."""
    app = web.Application()
    registry = CollectorRegistry(auto_describe=False)
    if replica is not None:
        registry.register(replica)

    async def not_yet(request: web.Request) -> web.Response:
        line = reason()
        body = {"ready": False, "starting": True, "problems": [line], "checks": {}, "conditions": [], "head": None}
        body["replica"] = None if replica is None else replica.snapshot()
        return web.json_response(body, status=503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)

    page = importlib.resources.files("node.api").joinpath("static/status.html").read_bytes()
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", not_yet)
    app.router.add_get("/status", not_yet)
    app.router.add_get("/metrics", metrics)
    return app


class CannotListen(ConfigError):
    """The API cannot listen on `[api] host`:`port` (the port is taken, the host does not resolve or is not this
    machine's, or the port needs privileges); the message names the key, the address and what to change. A
    `ConfigError`: `infera run` exits 2, which the systemd unit does not restart (a restart would not help)."""


#: What to say when binding fails, by errno: the config key to change, why, then what to do.
_BIND_ADVICE = {
    errno.EADDRINUSE: "api.port: {where} is already in use (by another infera node?): choose another port in [api]"
    " port, or stop what holds it (`ss -ltnp 'sport = :{port}'` names it)",
    errno.EADDRNOTAVAIL: "api.host: {where} is not an address of this machine: set [api] host to one of its"
    " addresses (127.0.0.1 for this machine only)",
    errno.EACCES: "api.port: {where} needs privileges this user lacks (ports below 1024): choose a port from 1024 up"
    " in [api] port",
}


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serves `app` on `host`:`port`; returns the runner to clean up. Raises `CannotListen` (one line naming the
    address, why and what to change) when it cannot bind there."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if isinstance(exc, socket.gaierror):  # the name, not the port: it does not resolve
            raise CannotListen(
                f"api.host: {host!r} does not resolve to an address ({exc.strerror or exc}): set [api] host to an"
                " address of this machine (127.0.0.1 for this machine only)"
            ) from None
        if exc.errno not in _BIND_ADVICE:
            raise CannotListen(
                f"api.port: cannot listen on {where} ({exc.strerror or exc}): check [api] host and port"
            ) from None
        raise CannotListen(_BIND_ADVICE[exc.errno].format(where=where, port=port)) from None
    return runner
