"""The `/v1` job API, `/info` and `/openapi.json` (the spec these routes are tested against, in the package)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from containers.runtime.wire import parse_json
from node.api.auth import CLIENT, json_error
from node.api.delegated import Busy, DelegatedRequests, NonceUsedError
from node.api.jobs import TERMINAL, JobInputError, JobsBusy, OffchainJob, OffchainJobs
from node.chain.rpc import TRANSPORT_ERRORS, RpcError
from node.errors import RpcUnavailable

JOBS: web.AppKey[OffchainJobs] = web.AppKey("offchain_jobs", OffchainJobs)
DELEGATED: web.AppKey[DelegatedRequests] = web.AppKey("delegated", DelegatedRequests)
STOPPING: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)
INFO: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("info", object)  # type: ignore[arg-type]
SPEC_PATH = Path(__file__).with_name("openapi.json")


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json(loads=parse_json)  # depth checked before parsing (see `parse_json`)
    except RecursionError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body nests too deeply to be a job"}), content_type="application/json"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body is not valid JSON: {exc}"}), content_type="application/json"
        ) from None


def _owned(request: web.Request) -> OffchainJob:
    job = request.app[JOBS].get(request[CLIENT], request.match_info["job_id"])
    if job is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no job {request.match_info['job_id']} for this token"}),
            content_type="application/json",
        )
    return job


def _refuse_while_stopping(request: web.Request) -> None:
    if request.app[STOPPING].is_set():
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": "the node is shutting down; submit to it again once it is back"}),
            content_type="application/json",
        )


async def submit_job(request: web.Request) -> web.Response:
    """`POST /v1/jobs`: one off-chain job; 202 with the job, 400 for a bad body, 503 when busy."""
    _refuse_while_stopping(request)
    body = await _json_body(request)
    try:
        (job,) = request.app[JOBS].submit(request[CLIENT], [body], batch=False)
    except JobInputError as exc:
        return json_error(422, str(exc))
    except JobsBusy as exc:
        return json_error(503, str(exc))
    return web.json_response(job.view(), status=202, headers={"Location": f"/v1/jobs/{job.id}"})


async def submit_batch(request: web.Request) -> web.Response:
    """`POST /v1/jobs/batch`: several off-chain jobs, checked whole before any runs; 202 with the jobs."""
    _refuse_while_stopping(request)
    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) != {"jobs"} or not isinstance(body["jobs"], list):
        return json_error(422, 'body must be {"jobs": [{"model": ..., "input": {...}}, ...]}')
    try:
        jobs = request.app[JOBS].submit(request[CLIENT], body["jobs"], batch=True)
    except JobInputError as exc:
        return json_error(422, str(exc))
    except JobsBusy as exc:
        return json_error(503, str(exc))
    return web.json_response({"jobs": [j.view() for j in jobs]}, status=202)


async def get_job(request: web.Request) -> web.Response:
    """`GET /v1/jobs/{id}`: the job as its owner sees it; 404 for an unknown id or another token's job."""
    return web.json_response(_owned(request).view())


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: `status` on each change, `token` per streamed piece, then `output` or `error`, `done`."""
    job = _owned(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)

    async def send(event: str, data: Any) -> None:
        await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

    sent_tokens, sent_status = 0, ""
    while True:
        changed = job.changed
        if job.status != sent_status:
            sent_status = job.status
            await send("status", {"status": job.status})
        while sent_tokens < len(job.tokens):
            await send("token", {"token": job.tokens[sent_tokens]})
            sent_tokens += 1
        if job.status in TERMINAL:
            if job.status == "completed":
                await send("output", {"output": job.output})
            else:
                await send("error", {"error": job.error})
            await send("done", job.view())
            break
        await changed.wait()
    await response.write_eof()
    return response


async def submit_delegated(request: web.Request) -> web.Response:
    """`POST /v1/delegated`: a signed delegated request, checked against the chain before it is accepted (202)."""
    _refuse_while_stopping(request)
    body = await _json_body(request)
    try:
        job = await request.app[DELEGATED].submit(request[CLIENT], body)
    except NonceUsedError as exc:
        return json_error(409, str(exc))
    except Busy as exc:
        return json_error(503, str(exc))
    except JobInputError as exc:
        return json_error(422, str(exc))
    except (RpcUnavailable, RpcError, *TRANSPORT_ERRORS) as exc:  # type: ignore[misc]
        return json_error(503, f"cannot check the request against the chain now ({type(exc).__name__}); retry")
    return web.json_response(job.view(), status=202, headers={"Location": f"/v1/delegated/{job.id}"})


async def get_delegated(request: web.Request) -> web.Response:
    """`GET /v1/delegated/{id}`: a delegated request's status; 404 for an unknown id or another token's."""
    job = request.app[DELEGATED].get(request[CLIENT], request.match_info["job_id"])
    if job is None:
        return json_error(404, f"no delegated request {request.match_info['job_id']} for this token")
    return web.json_response(job.view())


async def info(request: web.Request) -> web.Response:
    """`GET /info`: the node's version, chain, coordinator, keys and models."""
    return web.json_response(request.app[INFO]())


async def openapi(request: web.Request) -> web.Response:
    """The spec in the package, with this node's served models and batch limit filled in."""
    spec = json.loads(SPEC_PATH.read_text())
    jobs = request.app[JOBS]
    spec["components"]["schemas"]["JobSpec"]["properties"]["model"]["enum"] = jobs.served
    batch = spec["paths"]["/v1/jobs/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    batch["properties"]["jobs"]["maxItems"] = jobs.max_batch
    return web.json_response(spec)


def add_routes(
    app: web.Application,
    jobs: OffchainJobs,
    delegated: DelegatedRequests,
    info_fn: Callable[[], dict[str, Any]],
    stopping: asyncio.Event,
) -> None:
    """Adds the `/v1` API and `/info` to `app`."""
    app[STOPPING] = stopping
    app[JOBS] = jobs
    app[DELEGATED] = delegated
    app[INFO] = info_fn
    app.router.add_get("/info", info)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_post("/v1/jobs", submit_job)
    app.router.add_post("/v1/jobs/batch", submit_batch)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_get("/v1/jobs/{job_id}/events", job_events)
    app.router.add_post("/v1/delegated", submit_delegated)
    app.router.add_get("/v1/delegated/{job_id}", get_delegated)
