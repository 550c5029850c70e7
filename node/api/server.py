"""The node's HTTP endpoints: `/healthz` (the process is up) and `/readyz` (it can serve a request now).

Binds 127.0.0.1 unless configured otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

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


def waiting_app(reason: Callable[[], str]) -> web.Application:
    """The API while the node waits for its chain (before anything else is built): `/healthz` answers 200 (the
    process is alive), `/readyz` and `/status` 503 with `reason()` as the one problem."""
    app = web.Application()

    async def not_yet(request: web.Request) -> web.Response:
        line = reason()
        return web.json_response({"ready": False, "problems": [line], "starting": True}, status=503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", not_yet)
    app.router.add_get("/status", not_yet)
    return app


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serves `app` on `host`:`port` (raises OSError when the port is taken); returns the runner to clean up."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
