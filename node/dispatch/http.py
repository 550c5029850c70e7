"""Calls a model container over HTTP with the Infernet container protocol.

Guarantees: every answer is classified once, here and in `node.dispatch.protocol` (its table): a 4xx other than
408/425/429 is `ContainerRejected` (the input is bad; retrying cannot help); 408/425/429, a 5xx, a timeout or a
dropped connection is a retryable `ContainerError` carrying the container's `Retry-After` (`ContainerLost` when it
dropped mid-call: the container may have crashed); a refused connection is `ContainerUnavailable` (the container is
down); a 2xx whose body is not a usable answer is a retryable error, never a success. A body is read up to
`MAX_ANSWER_BYTES` (a non-2xx one up to `MAX_ERROR_BYTES`) and refused beyond, never held whole. Each answer that
is not a success is counted in `CONDITIONS` by its action; a container that keeps rate-limiting (429/503) is a
condition `container <name>` (logged once per change, not blocking readiness) until it answers again.
A container without `GET /health` (404/405, Infernet's) is judged by its answers: healthy until a call fails for a
reason of its own (not a rejected input, not rate limiting), and again once a call succeeds.

Off-chain jobs (`compute_offchain`) go to the same `POST /service_output` with an off-chain body, one round trip each;
`stream` reads `POST /service_output/stream`'s events piece by piece. Both are classified by the same table, and a
stream's `event: error` or an end without `event: done` is a retryable `ContainerError`.

Calls that overlap share HTTP round trips when the container has `POST /service_output/batch` (Infera's containers
do; an Infernet container answers it 404, and from then on each input gets its own `POST /service_output`): an input
is sent at once when fewer than `MAX_POSTS` calls are in flight, and otherwise waits for one of them to return and
goes with everything else that waited, up to `MAX_BATCH_ITEMS`. A lone request never waits; under load one round
trip carries many inputs (the node's CPU per job falls by a third with the echo container). Each item keeps its own
answer: one bad input fails only itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import aiohttp

from containers.runtime.wire import (
    BATCH_PATH,
    HEALTH_PATH,
    SERVICE_OUTPUT_PATH,
    STREAM_DONE,
    STREAM_ERROR,
    STREAM_PATH,
    Attestation,
    BatchRequest,
    RequestBody,
    StreamReader,
    batch_request,
    chain_request,
    offchain_request,
)
from node.dispatch.protocol import (
    MAX_ANSWER_BYTES,
    MAX_ERROR_BYTES,
    RATE_LIMITED,
    Output,
    classify,
    offchain_output,
    parse_json,
    raise_for_status,
)
from node.errors import ContainerError, ContainerLost, ContainerRejected, ContainerUnavailable, short
from node.observability.conditions import CONDITIONS
from node.retry import retry_after_s

#: Batch calls in flight to one container at once; further inputs wait for one to return.
MAX_POSTS = 2
#: Inputs in one batch call (the container's own limit is 64).
MAX_BATCH_ITEMS = 32
#: Input bytes in one batch call: hex doubles them, and the container's default body limit is 256 KiB.
MAX_BATCH_BYTES = 48 * 1024
#: Answers to the batch path that mean the container does not have it (an Infernet container).
NO_BATCH_PATH = (404, 405)
#: Answers to `GET /health` that mean the container has no health path (an Infernet container).
NO_HEALTH_PATH = (404, 405)
#: Rate-limited answers in a row after which the container is a condition (shown on `/status`, logged once).
RATE_LIMITED_CONDITION_AFTER = 2
#: Bytes of one line of a stream read at most (one piece's event); a longer line fails the stream.
MAX_STREAM_LINE_BYTES = 64 * 1024


class HttpDispatcher:
    """Sends on-chain inputs to one container's `POST /service_output` (or `/service_output/batch`) and returns the
    ABI output bytes with the container's proof (`Output`)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, timeout_s: float, name: str | None = None) -> None:
        """`url`: the container's base URL; `timeout_s`: seconds a call may take, body included; `name`: the model
        it serves, for conditions and logs (default the URL)."""
        self._session = session
        self._url = url.rstrip("/")
        self.name = name or self._url
        #: Whether the container has `GET /health`: None until it answers it.
        self.has_health: bool | None = None
        #: Whether its last judged call succeeded (what says "healthy" when it has no `/health`).
        self.answering = True
        #: Rate-limited answers in a row.
        self.rate_limited = 0
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        #: Whether the container has the batch path: None until its first answer says.
        self.batches: bool | None = None
        self._waiting: collections.deque[tuple[RequestBody, asyncio.Future[Output]]] = collections.deque()
        self._posts = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: Round trips made (batch calls and single calls), for tests and benchmarks.
        self.round_trips = 0

    @property
    def url(self) -> str:
        return self._url

    async def compute(
        self, job_id: str, input_: bytes, attestation: Attestation | None = None, consensus: bool = False
    ) -> Output:
        """The ABI output bytes for `input_` (ABI-encoded input bytes) and the container's proof (empty unless
        `attestation` asked for one, bound to it); `consensus`: in the model's consensus form. Raises the
        `ContainerError` family (see the module docstring)."""
        body = chain_request(input_, attestation, consensus=consensus)
        with self._judging():
            if self.batches is False:
                return await self._single(body)
            future: asyncio.Future[Output] = asyncio.get_running_loop().create_future()
            self._waiting.append((body, future))
            self._pump()
            return await future

    async def compute_offchain(self, job_id: str, data: dict[str, Any]) -> Any:
        """The output of an off-chain job (its input fields by name): what the container answers as `output`. Raises
        the `ContainerError` family."""
        with self._judging():
            status, payload, retry_after = await self._call(SERVICE_OUTPUT_PATH, offchain_request(data))
            return offchain_output(status, payload, "container", retry_after=retry_after)

    async def stream(self, job_id: str, data: dict[str, Any]) -> AsyncGenerator[str, None]:
        """The pieces of an off-chain job's output as the container streams them. Raises the `ContainerError` family
        (an `event: error`, or an end without `event: done`, is a retryable one)."""
        with self._judging():
            self.round_trips += 1
            with self._transport_errors():
                async with self._session.post(
                    f"{self._url}{STREAM_PATH}", json=offchain_request(data), timeout=self._timeout
                ) as resp:
                    if resp.status != 200:
                        payload = _json_or_none(await _read(resp, MAX_ERROR_BYTES))
                        retry_after = retry_after_s(resp.headers.get("Retry-After"))
                        raise_for_status(resp.status, payload, "container", retry_after=retry_after)
                        raise ContainerError(f"container answered {resp.status} to a stream call", status=resp.status)
                    reader = StreamReader()
                    while raw_line := await _read_line(resp):
                        event = reader.feed(raw_line.decode("utf-8", "replace"))
                        if event is None:
                            continue
                        kind, text = event
                        if kind == STREAM_DONE:
                            return
                        piece = _json_or_none(text)
                        if kind == STREAM_ERROR:
                            said = piece.get("error") if isinstance(piece, dict) else None
                            raise ContainerError(f"container failed while streaming: {short(said or text)}")
                        if not isinstance(piece, dict) or not isinstance(piece.get("token"), str):
                            raise ContainerError(f"container streamed a piece without a token: {short(text[:60])}")
                        yield piece["token"]
            raise ContainerError("container's stream ended without `done`")

    @contextlib.contextmanager
    def _judging(self) -> Iterator[None]:
        """Judges the call made inside: its error, or its success once it returns."""
        try:
            yield
        except ContainerError as exc:
            self._judge(exc)
            raise
        self._judge(None)

    def _judge(self, exc: ContainerError | None) -> None:
        """Counts a call's answer and keeps what it says about the container (health, rate limiting)."""
        if exc is None:
            self.answering = True
        else:
            CONDITIONS.count("container", exc.action)
            if not isinstance(exc, ContainerRejected) and exc.status not in RATE_LIMITED:
                self.answering = False
        if exc is not None and exc.status in RATE_LIMITED:
            self.rate_limited += 1
            if self.rate_limited >= RATE_LIMITED_CONDITION_AFTER:
                CONDITIONS.set(
                    f"container {self.name}",
                    "rate limiting the node (HTTP 429/503); calls wait as it asks",
                    blocks_ready=False,
                )
        elif self.rate_limited:
            self.rate_limited = 0
            CONDITIONS.set(f"container {self.name}", None)

    def _pump(self) -> None:
        while self._waiting and self._posts < MAX_POSTS:
            items: list[tuple[RequestBody, asyncio.Future[Output]]] = []
            size = 0
            while self._waiting and len(items) < MAX_BATCH_ITEMS:
                body, future = self._waiting[0]
                if items and size + len(body["data"]) // 2 > MAX_BATCH_BYTES:
                    break
                self._waiting.popleft()
                if not future.done():  # a cancelled job (reorg, shutdown) is not sent
                    items.append((body, future))
                    size += len(body["data"]) // 2
            if items:
                self._posts += 1
                task = asyncio.create_task(self._post(items))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _post(self, items: list[tuple[RequestBody, asyncio.Future[Output]]]) -> None:
        try:
            results = await self._batch([body for body, _ in items])
        except asyncio.CancelledError:
            for _, future in items:
                future.cancel()
            raise
        except Exception as exc:  # every call it carried fails as the round trip did
            results = [exc] * len(items)
        finally:
            self._posts -= 1
            self._pump()
        for (_, future), result in zip(items, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(_copy(result))
            else:
                future.set_result(result)

    async def _batch(self, inputs: list[RequestBody]) -> list[Output | BaseException]:
        """One round trip for `inputs` (request bodies); each gets its output or its own error."""
        if self.batches is False:  # learnt while these waited
            return await self._singly(inputs)
        status, payload, retry_after = await self._call(BATCH_PATH, batch_request(inputs))
        if status in NO_BATCH_PATH or status == 413:  # no batch path, or this batch is over the body limit
            if status != 413:
                self.batches = False
            return await self._singly(inputs)
        answers = payload.get("answers") if isinstance(payload, dict) else None
        if status != 200 or not isinstance(answers, list) or len(answers) != len(inputs):
            if status != 200:  # the whole call was answered as one (429, 500, ...): each item gets that answer
                classify(status, payload, "container", retry_after=retry_after)
            raise ContainerError(f"{self._url} answered the batch call without one answer per input", status=status)
        self.batches = True
        results: list[Output | BaseException] = []
        for answer in answers:
            try:
                if not isinstance(answer, dict) or not isinstance(answer.get("status"), int):
                    raise ContainerError("container answered a batch item without a status")
                results.append(classify(answer["status"], answer.get("body"), "container"))
            except ContainerError as exc:
                results.append(exc)
        return results

    async def _singly(self, inputs: list[RequestBody]) -> list[Output | BaseException]:
        return list(await asyncio.gather(*(self._single(i) for i in inputs), return_exceptions=True))

    async def _single(self, body: RequestBody) -> Output:
        status, payload, retry_after = await self._call(SERVICE_OUTPUT_PATH, body)
        return classify(status, payload, "container", retry_after=retry_after)

    async def _call(self, path: str, body: RequestBody | BatchRequest) -> tuple[int, Any, float | None]:
        """POSTs `body`; returns the status, the JSON answer (None when the body is empty or not JSON: a 404 page, a
        proxy's error page) and `Retry-After` in seconds. Raises a retryable `ContainerError` for a 2xx body that
        is not JSON or is longer than `MAX_ANSWER_BYTES` (read no further than that)."""
        self.round_trips += 1
        with self._transport_errors():
            async with self._session.post(f"{self._url}{path}", json=body, timeout=self._timeout) as resp:
                ok = 200 <= resp.status < 300
                retry_after = retry_after_s(resp.headers.get("Retry-After"))
                raw = await _read(resp, MAX_ANSWER_BYTES if ok else MAX_ERROR_BYTES)
                if raw is None and ok:
                    raise ContainerError(
                        f"{self._url} answered a body over {MAX_ANSWER_BYTES} bytes; refused", status=resp.status
                    )
                payload: Any = None
                if raw:
                    try:
                        payload = parse_json(raw)
                    except ValueError:
                        if ok:
                            raise ContainerError(
                                f"{self._url} answered with a body that is not JSON: {short(raw[:60])}",
                                status=resp.status,
                            ) from None
                return resp.status, payload, retry_after

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """Classifies what the connection did (the table in the module docstring)."""
        try:
            yield
        except TimeoutError:
            raise ContainerError(f"{self._url} did not answer within {self._timeout.total} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise ContainerUnavailable(f"{self._url} is down: {exc}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
            raise ContainerLost(f"{self._url} dropped the connection mid-call: {exc}") from None
        except aiohttp.ClientError as exc:
            raise ContainerError(f"{self._url} unreachable: {exc}") from None

    async def healthy(self) -> bool:
        """Whether the container can take calls: its `GET /health` is 200, or, when it has no such path (404/405),
        its calls have been answered (see the module docstring). False when it cannot be reached."""
        try:
            async with self._session.get(f"{self._url}{HEALTH_PATH}", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status in NO_HEALTH_PATH and self.has_health is not True:
                    self.has_health = False
                    return self.answering
                if resp.status == 200:
                    self.has_health = True
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


async def _read(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is longer than `limit` bytes (the connection is then closed, the rest unread)."""
    if resp.content_length is not None and resp.content_length > limit:
        resp.close()
        return None
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            resp.close()
            return None
    return bytes(body)


async def _read_line(resp: aiohttp.ClientResponse) -> bytes:
    """The stream's next line (b"" at its end). Raises a retryable `ContainerError` for a line over
    `MAX_STREAM_LINE_BYTES`."""
    try:
        line: bytes | None = await resp.content.readline()
    except ValueError:  # over aiohttp's own buffer limit
        line = None
    if line is None or len(line) > MAX_STREAM_LINE_BYTES:
        raise ContainerError(f"container streamed a line over {MAX_STREAM_LINE_BYTES} bytes")
    return line


def _json_or_none(raw: bytes | str | None) -> Any:
    """The JSON value of a body or event, None when there is none or it is not JSON."""
    if not raw:
        return None
    try:
        return parse_json(raw)
    except ValueError:
        return None


def _copy(exc: BaseException) -> BaseException:
    """Each waiting call raises an exception of its own (a raised exception collects its caller's traceback)."""
    if isinstance(exc, ContainerError):
        return type(exc)(str(exc), status=exc.status, retry_after_s=exc.retry_after_s)
    return exc
