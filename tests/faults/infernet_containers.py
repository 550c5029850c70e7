"""Containers of the test suite written to Infernet's documented answer shapes, and one that answers a seeded random
mix of bad answers before a good one.

- `hello`: Infernet's hello-world (ritual-net/infernet-container-starter, projects/hello-world): answers
  `{"output": "hello, world!, your input was: <the request body>"}`; no `GET /health` (404).
- `llm`: the on-chain shape of Infernet's tgi-llm/torch-iris containers: all five keys, `raw_output` the hex of
  `abi.encode(string upper-cased input)`, `processed_output` the hex of the reversed input text, `proof` empty; no
  `GET /health`.
- `ratelimit`: answers each input's first call 429 with `Retry-After: 1`, then as `llm`; has `GET /health`.
- `fuzz`: each input's calls follow `script(seed, input)`: bad answers (`BAD` kinds), then a good one in one of
  three shapes; no `GET /health`.

Every call to `/service_output` is appended to the journal (`<input hex> <answer kind>`) before it is answered, so a
test can count calls per request. Run: python -m tests.faults.infernet_containers --kind K --port P --journal FILE
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import email.utils
import hashlib
import json
import random
import time
from typing import Any

from aiohttp import web
from eth_abi.abi import decode, encode

JOURNAL = web.AppKey("journal", str)
KIND = web.AppKey("kind", str)
SEED = web.AppKey("seed", int)
CALLS = web.AppKey("calls", collections.Counter)

#: Bad answers the fuzz container gives, by kind; `final` ones end the request (a 4xx), the others are retried.
FINAL = {"400-long-error", "404-html", "418"}
RETRYABLE = {
    "500-json",
    "502-empty",
    "503-retry-after",
    "504-empty",
    "408",
    "429-seconds",
    "429-http-date",
    "200-empty",
    "200-not-json",
    "200-truncated",
    "200-list",
    "200-wrong-types",
    "200-not-hex",
    "200-deep",
    "200-huge-declared",
    "200-huge-chunked",
    "200-big-wrong-type",
    "200-drip",
}
#: Kinds that cost tens of MB or seconds each: at most a few per run.
EXPENSIVE = {"200-huge-declared", "200-huge-chunked", "200-big-wrong-type", "200-drip"}
GOOD = ("good-hello", "good-llm", "good-abi")
#: Bytes of the huge answers (over the node's 32 MiB cap) and of the big one under it.
HUGE_BYTES = 40 * 1024 * 1024
BIG_BYTES = 12 * 1024 * 1024


#: Every bad kind, in a fixed order: input `fuzz-<i>` starts with the i-th, so a run of this many inputs has each.
EVERY_BAD = sorted(RETRYABLE | FINAL)


def script(seed: int, input_: bytes) -> list[str]:
    """The answers the fuzz container gives to `input_`'s calls, in order: 0-5 bad ones, then a good one (expensive
    kinds only for about one input in eight); the input `abi.encode(string "fuzz-<i>")` with i below
    `len(EVERY_BAD)` has `EVERY_BAD[i]` first."""
    rng = random.Random(int.from_bytes(hashlib.sha256(seed.to_bytes(8, "big") + input_).digest()[:8], "big"))
    pool = sorted(RETRYABLE - EXPENSIVE) + sorted(FINAL)
    if rng.random() < 0.125:
        pool += sorted(EXPENSIVE)
    bad = [rng.choice(pool) for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 4, 5]))]
    try:
        (text,) = decode(["string"], input_)
        index = int(text.removeprefix("fuzz-"))
    except Exception:
        index = -1
    if 0 <= index < len(EVERY_BAD):
        bad = [EVERY_BAD[index], *bad]
    return [*bad, rng.choice(GOOD)]


def hello_answer(body: Any) -> dict[str, Any]:
    return {"output": f"hello, world!, your input was: {body}"}


def llm_answer(body: Any) -> dict[str, Any]:
    (text,) = decode(["string"], bytes.fromhex(body["data"]))
    return {
        "raw_input": "",
        "processed_input": "",
        "raw_output": encode(["string"], [text.upper()]).hex(),
        "processed_output": text[::-1].encode().hex(),
        "proof": "",
    }


def abi_answer(body: Any) -> dict[str, Any]:
    """An Infera container's answer: the input echoed as the ABI output."""
    return {"raw_output": body["data"], "abi_output": True}


async def service_output(request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    body = json.loads(raw)
    input_ = bytes.fromhex(body["data"])
    app = request.app
    n = app[CALLS][input_]
    app[CALLS][input_] += 1
    kind = app[KIND]
    if kind == "hello":
        answer = "good-hello"
    elif kind == "llm":
        answer = "good-llm"
    elif kind == "ratelimit":
        answer = "429-seconds" if n == 0 else "good-llm"
    else:
        steps = script(app[SEED], input_)
        answer = steps[min(n, len(steps) - 1)]
    with open(app[JOURNAL], "a") as journal:  # noqa: ASYNC230 - on disk before the answer
        journal.write(f"{input_.hex()} {answer}\n")
    return await respond(request, answer, body)


async def respond(request: web.Request, answer: str, body: Any) -> web.StreamResponse:
    if answer == "good-hello":
        return web.json_response(hello_answer(body))
    if answer == "good-llm":
        return web.json_response(llm_answer(body), status=200)
    if answer == "good-abi":
        return web.json_response(abi_answer(body), status=201)
    if answer == "400-long-error":
        return web.json_response({"error": "bad input " + "x" * 20_000}, status=400)
    if answer == "404-html":
        return web.Response(status=404, text="<html>" + "no " * 1000 + "</html>", content_type="text/html")
    if answer == "418":
        return web.Response(status=418)
    if answer == "500-json":
        return web.json_response({"error": {"nested": "model blew up"}}, status=500)
    if answer in ("502-empty", "504-empty"):
        return web.Response(status=int(answer[:3]))
    if answer == "503-retry-after":
        return web.Response(status=503, headers={"Retry-After": "1"}, text="busy")
    if answer == "408":
        return web.Response(status=408)
    if answer == "429-seconds":
        return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": "1"})
    if answer == "429-http-date":
        when = email.utils.formatdate(time.time() + 2, usegmt=True)
        return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": when})
    if answer == "200-empty":
        return web.Response(status=200)
    if answer == "200-not-json":
        return web.Response(status=200, text="<html>ok</html>", content_type="text/html")
    if answer == "200-truncated":
        return web.Response(status=200, text='{"raw_output": "ab', content_type="application/json")
    if answer == "200-list":
        return web.json_response([1, 2, 3])
    if answer == "200-wrong-types":
        return web.json_response({"raw_output": 12345, "abi_output": True})
    if answer == "200-not-hex":
        return web.json_response({**llm_answer(body), "raw_output": "zz-not-hex"})
    if answer == "200-deep":
        return web.Response(status=200, text="[" * 200_000 + "]" * 200_000, content_type="application/json")
    if answer == "200-huge-declared":
        return web.Response(status=200, body=b" " * HUGE_BYTES, content_type="application/json")
    if answer == "200-huge-chunked":
        return await stream(request, [b"[" + b"0," * (512 * 1024)] * (HUGE_BYTES // (1024 * 1024)), 0.0)
    if answer == "200-big-wrong-type":
        return web.Response(status=200, body=json.dumps(["x" * BIG_BYTES]).encode(), content_type="application/json")
    if answer == "200-drip":
        return await stream(request, [b'{"raw_output": "'] + [b"00"] * 40, 0.25)
    raise AssertionError(answer)


async def stream(request: web.Request, chunks: list[bytes], pause_s: float) -> web.StreamResponse:
    """Sends `chunks` chunked (no Content-Length), pausing between them; stops quietly when the caller hangs up."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        for chunk in chunks:
            await resp.write(chunk)
            if pause_s:
                await asyncio.sleep(pause_s)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass
    return resp


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def index(request: web.Request) -> web.Response:
    return web.Response(text="Hello world service!")


def create_app(kind: str, journal: str, seed: int = 0) -> web.Application:
    app = web.Application(client_max_size=1024**2)
    app[KIND] = kind
    app[JOURNAL] = journal
    app[SEED] = seed
    app[CALLS] = collections.Counter()
    app.router.add_post("/service_output", service_output)
    app.router.add_get("/", index)
    if kind == "ratelimit":
        app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["hello", "llm", "ratelimit", "fuzz"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    web.run_app(create_app(args.kind, args.journal, args.seed), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
