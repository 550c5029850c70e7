"""aiohttp app that serves a `Model` over the Infernet container protocol.

Protocol: `POST /service_output` takes `{source, destination, data, requires_proof}`. With `source` 0 (chain),
`data` is the hex of the ABI-encoded input; with 1 (off-chain) it is a JSON object keyed by the model's input
names. With `destination` 0 (chain) the answer is `{raw_input, processed_input, raw_output, processed_output,
proof}` with `raw_output` the hex of the ABI-encoded output, as Infernet containers answer; with 1 it is
`{"output": {...}}`. `GET /health` is 200 only once the model is loaded; `GET /info` describes the model.

Guarantees: bad input is a 400 with the reason, a model failure a 500, never a 200 with an error inside; the
model is loaded once, and inference runs on one worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from containers.runtime.codec import AbiCodec, CodecError, parse_hex
from containers.runtime.model import InputError, Model

log = logging.getLogger(__name__)

SOURCE_CHAIN, SOURCE_OFFCHAIN = 0, 1
DEFAULT_MAX_BODY_BYTES = 256 * 1024


@dataclass
class ServerState:
    model: Model
    codec: AbiCodec
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "model"))
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    load_error: str | None = None


STATE = web.AppKey("state", ServerState)


class BadRequest(web.HTTPBadRequest):
    def __init__(self, reason: str) -> None:
        super().__init__(text=json.dumps({"error": reason}), content_type="application/json")


def _parse_body(body: Any) -> tuple[int, int, Any]:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object with source, destination, data")
    source, destination = body.get("source", SOURCE_CHAIN), body.get("destination", SOURCE_CHAIN)
    for key, value in (("source", source), ("destination", destination)):
        if value not in (SOURCE_CHAIN, SOURCE_OFFCHAIN):
            raise BadRequest(f"{key} must be 0 (chain) or 1 (off-chain), got {value!r}")
    if "data" not in body:
        raise BadRequest("missing key: data")
    return source, destination, body["data"]


def _decode(state: ServerState, source: int, data: Any) -> tuple[tuple[Any, ...], bytes | None]:
    if source == SOURCE_CHAIN:
        if not isinstance(data, str):
            raise BadRequest("data must be a hex string when source is 0 (chain)")
        raw = parse_hex(data)
        return state.codec.decode_input(raw), raw
    if not isinstance(data, dict):
        raise BadRequest("data must be a JSON object when source is 1 (off-chain)")
    missing = [n for n in state.model.input_names if n not in data]
    if missing:
        raise BadRequest(f"missing input field(s): {', '.join(missing)}")
    return tuple(data[n] for n in state.model.input_names), None


async def service_output(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.ready.is_set():
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": "model is still loading"}), content_type="application/json"
        )
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("body is not valid JSON") from None
    source, destination, data = _parse_body(body)
    try:
        args, raw_input = _decode(state, source, data)
    except CodecError as exc:
        raise BadRequest(str(exc)) from None

    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        (output,) = await loop.run_in_executor(state.executor, state.model.predict, [args])
    except InputError as exc:
        raise BadRequest(str(exc)) from None
    except Exception as exc:
        log.exception("model %s failed", state.model.name)
        raise web.HTTPInternalServerError(
            text=json.dumps({"error": f"model error: {exc}"}), content_type="application/json"
        ) from None
    elapsed_ms = (time.perf_counter() - started) * 1000

    if destination == SOURCE_OFFCHAIN:
        result: dict[str, Any] = {"output": dict(zip(state.model.output_names, output, strict=True))}
    else:
        try:
            encoded = state.codec.encode_output(output)
        except CodecError as exc:
            log.error("model %s returned output that does not encode: %s", state.model.name, exc)
            raise web.HTTPInternalServerError(
                text=json.dumps({"error": str(exc)}), content_type="application/json"
            ) from None
        result = {
            "raw_input": raw_input.hex() if raw_input is not None else "",
            "processed_input": "",
            "raw_output": encoded.hex(),
            "processed_output": "",
            "proof": "",
        }
    log.info("served %s in %.1f ms", state.model.name, elapsed_ms)
    return web.json_response(result)


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.load_error is not None:
        return web.json_response({"status": "failed", "error": state.load_error}, status=503)
    if not state.ready.is_set():
        return web.json_response({"status": "loading"}, status=503)
    return web.json_response({"status": "ok"})


async def info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model = state.model
    return web.json_response(
        {
            "model": model.name,
            "input_abi": state.codec.input_signature,
            "output_abi": state.codec.output_signature,
            "input_names": list(model.input_names),
            "output_names": list(model.output_names),
            "device": model.device,
            "ready": state.ready.is_set(),
            **model.info(),
        }
    )


async def _load_model(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]

    async def load() -> None:
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(state.executor, state.model.load)
        except Exception as exc:
            state.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model %s failed to load", state.model.name)
            return
        state.ready.set()
        log.info(
            "model %s ready on %s in %.1f s",
            state.model.name,
            state.model.device,
            time.perf_counter() - started,
        )

    task = asyncio.create_task(load())
    yield
    task.cancel()
    state.executor.shutdown(wait=True, cancel_futures=True)


def create_app(model: Model, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> web.Application:
    """Builds the container app; the model starts loading when the app starts, and /health says when it is."""
    app = web.Application(client_max_size=max_body_bytes)
    app[STATE] = ServerState(model=model, codec=AbiCodec(model.input_types, model.output_types))
    app.cleanup_ctx.append(_load_model)
    app.router.add_post("/service_output", service_output)
    app.router.add_get("/health", health)
    app.router.add_get("/info", info)
    return app
