"""aiohttp app that serves a `Model` over the Infernet container protocol, over HTTP and (optionally) MQTT.

Protocol: defined once, in `containers/runtime/wire.py` (the node reads answers with the same module): `POST
/service_output`, `POST /service_output/batch` (one HTTP round trip for many inputs, which join the model's batches
like any other calls), `POST /service_output/stream` (a streaming model's output as Server-Sent Events).
`GET /health` is 200 only once the model is loaded and warmed up; `GET /info` describes the model and batching,
and states its consensus form (`"consensus"`), in which a body with `consensus: true` is answered.

Guarantees: bad input is a 400 with the reason (a JSON body nested deeper than `wire.MAX_JSON_DEPTH` included,
refused before parsing: unguarded it would crash the process), a model failure a 500, never a 200 with an error
inside; an off-chain output field of bytes is answered as 0x-hex, one JSON cannot carry is that answer's 500; inputs
are checked one by one before they join a batch, so one bad input never fails another caller's request; on
shutdown, requests in flight are finished before the model stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

from aiohttp import web

from containers.runtime.attest import AttestationError, Attester, check_context, files_digest
from containers.runtime.batching import DynamicBatcher
from containers.runtime.codec import AbiCodec, CodecError, parse_hex
from containers.runtime.model import (
    BYTES_FORM,
    InputError,
    Model,
    SchedulingModel,
    StreamingModel,
    WeightedModel,
    canonical_output,
    consensus_form,
)
from containers.runtime.wire import (
    BATCH_PATH,
    CONSENSUS_KEY,
    HEALTH_PATH,
    INFO_PATH,
    MAX_BATCH_ITEMS,
    NO_ATTESTATION_KEY,
    SERVICE_OUTPUT_PATH,
    SOURCE_CHAIN,
    SOURCE_OFFCHAIN,
    STREAM_PATH,
    BatchAnswer,
    chain_answer,
    error_answer,
    offchain_answer,
    parse_json,
    stream_done,
    stream_error,
    stream_piece,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class BatchConfig:
    """Dynamic batching: largest batch, and the longest wait in ms for one to fill."""

    max_batch_size: int = 32
    max_wait_ms: float = 5.0


@dataclass
class ServerState:
    """What a model server holds: the model, its ABI codec, batching and the executor it runs on."""

    model: Model
    codec: AbiCodec
    batching: BatchConfig
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "model"))
    #: Where a `SchedulingModel`'s inputs are checked (tokenizing, compiling a grammar): off the event loop, beside
    #: the model's own thread.
    checker: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2, "check"))
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    load_error: str | None = None
    batcher: DynamicBatcher | None = None
    #: The attestation key (read at start) and the model digest given on the command line; the `attester` is made
    #: from them once the model is loaded (the digest of its weight files is taken then when none was given).
    attestation_key: bytes | None = field(default=None, repr=False)
    model_digest: bytes | None = None
    #: Each weight file's own sha256 (hex) by name, read with the model digest at load (empty when it was given).
    weights_sha256: dict[str, str] = field(default_factory=dict)
    attester: Attester | None = None


STATE = web.AppKey("state", ServerState)


@dataclass(frozen=True)
class Answer:
    """An HTTP status and JSON body: what `/service_output` answers and what an MQTT worker replies."""

    status: int
    body: dict[str, Any]

    @classmethod
    def error(cls, status: int, reason: str) -> Answer:
        return cls(status, dict(error_answer(reason)))


class Rejected(Exception):
    """An input the server refuses; carries the answer to send (4xx)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.body.get("error"))
        self.answer = answer


def _bad(reason: str) -> Rejected:
    return Rejected(Answer.error(400, reason))


def _parse_body(body: Any) -> tuple[int, int, Any]:
    if not isinstance(body, dict):
        raise _bad("body must be a JSON object with source, destination, data")
    source, destination = body.get("source", SOURCE_CHAIN), body.get("destination", SOURCE_CHAIN)
    for key, value in (("source", source), ("destination", destination)):
        if value not in (SOURCE_CHAIN, SOURCE_OFFCHAIN):
            raise _bad(f"{key} must be 0 (chain) or 1 (off-chain), got {value!r}")
    if "data" not in body:
        raise _bad("missing key: data")
    return source, destination, body["data"]


def _decode(state: ServerState, source: int, data: Any) -> tuple[tuple[Any, ...], bytes | None]:
    try:
        if source == SOURCE_CHAIN:
            if not isinstance(data, str):
                raise _bad("data must be a hex string when source is 0 (chain)")
            raw = parse_hex(data)
            args, raw_input = state.codec.decode_input(raw), raw
        else:
            if not isinstance(data, dict):
                raise _bad("data must be a JSON object when source is 1 (off-chain)")
            defaults: dict[str, Any] = getattr(state.model, "input_defaults", {})
            names = state.model.input_names
            unknown = [k for k in data if k not in names]
            if unknown and defaults:  # a misspelt optional field would silently take its default: refuse it
                hints = [f"{k} (did you mean {m[0]}?)" if (m := get_close_matches(k, names, 1)) else k for k in unknown]
                raise _bad(f"unknown input field(s): {', '.join(hints)}; the fields are {', '.join(names)}")
            missing = [n for n in names if n not in data and n not in defaults]
            if missing:
                raise _bad(f"missing input field(s): {', '.join(missing)}")
            args, raw_input = tuple(data.get(n, defaults.get(n)) for n in state.model.input_names), None
        return state.model.check(args), raw_input
    except (CodecError, InputError) as exc:
        raise _bad(str(exc)) from None


@dataclass(frozen=True)
class _Prepared:
    """A checked request: where its output goes, the model's arguments, the raw input (on-chain), when a proof
    is required, the attestation context, and whether it is answered in the model's consensus form."""

    destination: int
    args: tuple[Any, ...]
    raw_input: bytes | None
    attestation: Any = None
    consensus: bool = False


def _consensus(body: dict[str, Any]) -> bool:
    value = body.get(CONSENSUS_KEY, False)
    if not isinstance(value, bool):  # a truthy string or 1 would silently pick a form: refuse it
        raise _bad(f"{CONSENSUS_KEY} must be true or false, got {value!r}")
    return value


def _prepare(state: ServerState, body: Any) -> _Prepared:
    if state.load_error is not None:
        raise Rejected(Answer.error(503, f"model failed to load: {state.load_error}"))
    if not state.ready.is_set():
        raise Rejected(Answer.error(503, "model is still loading"))
    source, destination, data = _parse_body(body)
    consensus = _consensus(body)
    context = None
    if body.get("requires_proof") is True:
        if source != SOURCE_CHAIN or destination != SOURCE_CHAIN:
            raise _bad("a proof is given only for on-chain requests (source and destination 0)")
        if state.attester is None:
            raise _bad(NO_ATTESTATION_KEY)
        context = body.get("attestation")
        try:
            check_context(context)
        except AttestationError as exc:
            raise _bad(str(exc)) from None
    args, raw_input = _decode(state, source, data)
    return _Prepared(destination, args, raw_input, context, consensus)


async def _prepare_off_loop(state: ServerState, body: Any) -> _Prepared:
    """`_prepare`, on the checker threads for a model whose checks are heavy (a `SchedulingModel` tokenizes and
    compiles grammars), inline for the others."""
    if isinstance(state.model, SchedulingModel):
        return await asyncio.get_running_loop().run_in_executor(state.checker, _prepare, state, body)
    return _prepare(state, body)


def _encode(state: ServerState, prepared: _Prepared, output: tuple[Any, ...]) -> Answer:
    if prepared.destination == SOURCE_OFFCHAIN:
        try:  # bytes as 0x-hex; a type JSON cannot carry is this answer's 500, never the batch's
            return Answer(200, dict(offchain_answer(dict(zip(state.model.output_names, output, strict=True)))))
        except (TypeError, ValueError) as exc:
            log.error("model %s returned output that JSON cannot carry: %s", state.model.name, exc)
            return Answer.error(500, f"model error: {exc}")
    try:
        encoded = state.codec.encode_output(output)
    except CodecError as exc:
        log.error("model %s returned output that does not encode: %s", state.model.name, exc)
        return Answer.error(500, str(exc))
    proof = b""
    if prepared.attestation is not None:
        assert state.attester is not None  # checked by `_prepare`
        assert prepared.raw_input is not None
        proof = state.attester.proof(prepared.attestation, prepared.raw_input, encoded)
    return Answer(200, dict(chain_answer(prepared.raw_input, encoded, proof)))


async def process(state: ServerState, body: Any) -> Answer:
    """Answers one container-protocol request body; shared by the HTTP route and the MQTT worker."""
    try:
        prepared = await _prepare_off_loop(state, body)
    except Rejected as exc:
        return exc.answer
    assert state.batcher is not None
    started = time.perf_counter()
    try:
        if isinstance(state.model, SchedulingModel):
            try:
                output = await asyncio.wrap_future(state.model.schedule(prepared.args))
            except InputError as exc:  # found while it ran (an answer that could not complete): retrying cannot help
                return Answer.error(400, str(exc))
        else:
            output = await state.batcher.submit(prepared.args)
        if prepared.consensus:  # before encoding: the proof signs, and the chain gets, the canonical bytes
            output = canonical_output(state.model, output)
    except Exception as exc:
        log.error("model %s failed: %s: %s", state.model.name, type(exc).__name__, exc)
        return Answer.error(500, f"model error: {exc}")
    answer = _encode(state, prepared, output)
    log.debug("served %s in %.1f ms", state.model.name, (time.perf_counter() - started) * 1000)
    return answer


async def service_output(request: web.Request) -> web.Response:
    """`POST /service_output` (Infernet protocol): one input in, its output (or a 4xx/5xx error) out."""
    try:
        body = await request.json(loads=parse_json)
    except ValueError as exc:
        answer = Answer.error(400, f"body is not valid JSON: {exc}")
    else:
        answer = await process(request.app[STATE], body)
    return web.json_response(answer.body, status=answer.status)


async def service_output_batch(request: web.Request) -> web.Response:
    """Answers each body of `{"requests": [...]}` as `/service_output` would, in order; one item's bad input or
    model error is that item's answer, never the others'."""
    try:
        body = await request.json(loads=parse_json)
    except ValueError as exc:
        return web.json_response(error_answer(f"body is not valid JSON: {exc}"), status=400)
    items = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_ITEMS:
        return web.json_response(
            error_answer(f'body must be {{"requests": [...]}} with 1 to {MAX_BATCH_ITEMS} request bodies'), status=400
        )
    answers = await asyncio.gather(*(process(request.app[STATE], item) for item in items))
    batch: BatchAnswer = {"answers": [{"status": a.status, "body": a.body} for a in answers]}
    return web.json_response(batch)


async def service_output_stream(request: web.Request) -> web.StreamResponse:
    """Streams a streaming model's output as SSE: `data: {"token": …}` events, then `event: done`."""
    state = request.app[STATE]
    model = state.model
    if not isinstance(model, StreamingModel):
        return web.json_response(error_answer(f"{model.name} does not stream"), status=404)
    try:
        body = await request.json(loads=parse_json)
    except ValueError as exc:
        return web.json_response(error_answer(f"body is not valid JSON: {exc}"), status=400)
    try:
        prepared = await _prepare_off_loop(state, body)
    except Rejected as exc:
        return web.json_response(exc.answer.body, status=exc.answer.status)
    if prepared.consensus and consensus_form(model)["form"] != BYTES_FORM["form"]:  # pieces cannot be canonical
        reason = f"{model.name} answers consensus requests in its {consensus_form(model)['form']!r} form: not streamed"
        return web.json_response(error_answer(reason), status=400)
    args = prepared.args

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

    def produce() -> None:
        try:
            for piece in model.stream(args):
                loop.call_soon_threadsafe(pieces.put_nowait, piece)
        except BaseException as exc:
            loop.call_soon_threadsafe(pieces.put_nowait, exc)
        else:
            loop.call_soon_threadsafe(pieces.put_nowait, None)

    def put(item: str | BaseException | None) -> None:
        loop.call_soon_threadsafe(pieces.put_nowait, item)

    scheduled: Any = None
    producer: asyncio.Future[None] = loop.create_future()
    if isinstance(model, SchedulingModel):  # its own thread calls back; nothing blocks the model's executor
        try:
            scheduled = model.schedule(args, on_piece=put)
        except Exception as exc:  # e.g. shutting down: said as the stream's error event
            put(exc)
        else:
            scheduled.add_done_callback(lambda f: put(None if f.cancelled() else (f.exception() or None)))
        producer.set_result(None)
    else:
        producer = loop.run_in_executor(state.executor, produce)
    try:
        while (piece := await pieces.get()) is not None:
            if isinstance(piece, BaseException):
                await response.write(stream_error(str(piece)))
                break
            await response.write(stream_piece(piece))
        else:
            await response.write(stream_done())
        await response.write_eof()
    except ConnectionResetError:  # the client left: stop its generation (a model that schedules frees the slot)
        log.info("stream client of %s disconnected; generation stopped", model.name)
        if scheduled is not None:
            scheduled.cancel()
    await producer
    return response


async def health(request: web.Request) -> web.Response:
    """`GET /health`: 200 `{"status": "ok"}` once the model is loaded."""
    state = request.app[STATE]
    if state.load_error is not None:
        return web.json_response({"status": "failed", "error": state.load_error}, status=503)
    if not state.ready.is_set():
        return web.json_response({"status": "loading"}, status=503)
    return web.json_response({"status": "ok"})


async def info(request: web.Request) -> web.Response:
    """`GET /info`: the model's name, input and output types and batching."""
    state = request.app[STATE]
    model = state.model
    stats = state.batcher.stats if state.batcher else None
    return web.json_response(
        {
            "model": model.name,
            "input_abi": state.codec.input_signature,
            "output_abi": state.codec.output_signature,
            "input_names": list(model.input_names),
            "output_names": list(model.output_names),
            "input_defaults": getattr(model, "input_defaults", {}),
            "device": model.device,
            "ready": state.ready.is_set(),
            "streaming": isinstance(model, StreamingModel),
            "attester": state.attester.address if state.attester else None,
            "model_digest": "0x" + state.model_digest.hex() if state.model_digest else None,
            "weights_sha256": state.weights_sha256,
            CONSENSUS_KEY: consensus_form(model),
            "batching": {
                "max_batch_size": state.batching.max_batch_size,
                "max_wait_ms": state.batching.max_wait_ms,
                "batches": stats.batches if stats else 0,
                "mean_batch_size": round(stats.mean_size, 2) if stats else 0.0,
                "largest_batch": stats.largest if stats else 0,
                "pending": state.batcher.pending if state.batcher else 0,
            },
            **model.info(),
        }
    )


async def _model_lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state.batcher = DynamicBatcher(
        state.model.predict,
        state.executor,
        max_batch_size=state.batching.max_batch_size,
        max_wait_ms=state.batching.max_wait_ms,
    )
    state.batcher.start()

    async def load() -> None:
        started = time.perf_counter()
        log.info("loading model %s (GET /health is 503 until it is ready)", state.model.name)
        try:
            await asyncio.get_running_loop().run_in_executor(state.executor, state.model.load)
            model = state.model
            if state.model_digest is None and isinstance(model, WeightedModel):  # /info names it for every model
                try:
                    state.model_digest = await asyncio.get_running_loop().run_in_executor(
                        state.executor, files_digest, model.weight_files(), state.weights_sha256
                    )
                except AttestationError:  # no weight files: only an attesting container needs a digest
                    if state.attestation_key is not None:
                        raise
            if state.attestation_key is not None:
                digest = state.model_digest
                if digest is None:
                    raise AttestationError(f"{model.name} has no weight files to digest; give --model-digest")
                state.attester = Attester(digest, state.attestation_key)
                log.info("attesting outputs as %s, model digest 0x%s", state.attester.address, digest.hex())
        except Exception as exc:
            state.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model %s failed to load", state.model.name)
            return
        state.ready.set()
        log.info("model %s ready on %s in %.1f s", state.model.name, state.model.device, time.perf_counter() - started)

    task = asyncio.create_task(load())
    yield
    # aiohttp has already let in-flight handlers finish; drain what they queued, then stop the model thread.
    task.cancel()
    await state.batcher.stop()
    if isinstance(state.model, SchedulingModel):
        await asyncio.get_running_loop().run_in_executor(state.executor, state.model.close)
    state.checker.shutdown(wait=True, cancel_futures=True)
    state.executor.shutdown(wait=True, cancel_futures=True)


def create_app(
    model: Model,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    batching: BatchConfig | None = None,
    attestation_key: bytes | None = None,
    model_digest: bytes | None = None,
) -> web.Application:
    """Builds the container app; the model starts loading when the app starts, and /health says when it is.
    `attestation_key` (32 bytes, from `attest.read_key_file`): answer requests that require a proof, with
    `model_digest` (32 bytes) or, when None, the sha256 of the model's weight files taken at load."""
    app = web.Application(client_max_size=max_body_bytes)
    app[STATE] = ServerState(
        model=model,
        codec=AbiCodec(model.input_types, model.output_types),
        batching=batching or BatchConfig(),
        attestation_key=attestation_key,
        model_digest=model_digest,
    )
    app.cleanup_ctx.append(_model_lifecycle)
    app.router.add_post(SERVICE_OUTPUT_PATH, service_output)
    app.router.add_post(BATCH_PATH, service_output_batch)
    app.router.add_post(STREAM_PATH, service_output_stream)
    app.router.add_get(HEALTH_PATH, health)
    app.router.add_get(INFO_PATH, info)
    return app
