"""What a standby checks while it waits (node/jobs/replicas.py): its containers, on real HTTP servers."""

from __future__ import annotations

from aiohttp import web

from node.devnet import free_port
from node.jobs.replicas import containers_down, poll_s


async def test_a_standby_names_the_containers_that_do_not_answer() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": "model not loaded"}, status=503)

    app = web.Application()
    app.router.add_get("/up/health", ok)
    app.router.add_get("/broken/health", broken)  # /plain/health is a 404: a container without the endpoint
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        base = f"http://127.0.0.1:{port}"
        urls = {
            "up": f"{base}/up",
            "plain": f"{base}/plain/",
            "broken": f"{base}/broken",
            "gone": f"http://127.0.0.1:{free_port()}",
        }
        assert await containers_down(urls) == ["broken", "gone"]
        assert await containers_down({}) == []
    finally:
        await runner.cleanup()


def test_a_standby_asks_for_the_lease_five_times_a_ttl_at_most_once_a_second() -> None:
    assert [poll_s(ttl) for ttl in (3, 5, 15, 600)] == [0.6, 1.0, 1.0, 1.0]
