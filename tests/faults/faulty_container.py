"""A container of the test suite's own that speaks the Infernet protocol and misbehaves on command.

It echoes its input, like the echo server (an off-chain job's `text` as `{"echo": text}`), but each input can be
made to fail: `fail500-*` answers HTTP 500, `hang-*` never answers, `malformed-*` answers 200 with a body that is not
an output, `crash-*` kills the process. `POST /hold` makes every call wait (without computing) until `POST /release`.
Every computed answer is appended to a journal file before it is sent, so the tests can count computations across
crashes and restarts; a call whose caller hung up while it was held is not computed and not journaled.

Run: python -m tests.faults.faulty_container --port P --journal FILE
"""

from __future__ import annotations

import argparse
import asyncio
import os

from aiohttp import web

from containers.runtime.wire import SOURCE_OFFCHAIN

HOLD = web.AppKey("hold", asyncio.Event)
JOURNAL = web.AppKey("journal", str)


async def service_output(request: web.Request) -> web.Response:
    body = await request.json()
    offchain = body.get("source") == SOURCE_OFFCHAIN  # a /v1 job: {"text": ...} in, {"output": {"echo": ...}} out
    data = str(body["data"].get("text", "")).encode() if offchain else bytes.fromhex(body["data"])
    released = request.app[HOLD]
    if not released.is_set():
        await released.wait()
    if request.transport is None or request.transport.is_closing():
        return web.Response(status=499)  # the caller is gone: nothing computed
    text = data.decode(errors="replace")
    if text.startswith("crash-"):
        os._exit(3)
    if text.startswith("hang-"):
        await asyncio.Event().wait()
    with open(request.app[JOURNAL], "a") as journal:  # noqa: ASYNC230 - must be on disk before the answer
        journal.write(data.hex() + "\n")
    if text.startswith("fail500-"):
        return web.json_response({"error": "model blew up"}, status=500)
    if offchain:
        return web.json_response({"output": {"echo": text}})
    if text.startswith("malformed-"):
        return web.json_response({"raw_output": 12345, "abi_output": True})
    return web.json_response({"raw_output": data.hex(), "processed_output": None, "abi_output": True})


async def hold(request: web.Request) -> web.Response:
    request.app[HOLD].clear()
    return web.json_response({"held": True})


async def release(request: web.Request) -> web.Response:
    request.app[HOLD].set()
    return web.json_response({"held": False})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(journal: str) -> web.Application:
    """The container's app; like an Infernet container it has `/service_output` but no batch path."""
    app = web.Application()
    app[HOLD] = asyncio.Event()
    app[HOLD].set()
    app[JOURNAL] = journal
    app.router.add_post("/service_output", service_output)
    app.router.add_post("/hold", hold)
    app.router.add_post("/release", release)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--journal", required=True)
    args = parser.parse_args()
    web.run_app(create_app(args.journal), host="127.0.0.1", port=args.port, print=None, handler_cancellation=False)


if __name__ == "__main__":
    main()
