"""Calls a model container over HTTP with the Infernet container protocol.

Guarantees: a 4xx is `ContainerRejected` (the input is bad; retrying cannot help); a 5xx, a timeout or a dropped
connection is a retryable `ContainerError` (`ContainerLost` when it dropped mid-call: the container may have crashed);
a refused connection is `ContainerUnavailable` (the container is down); a 200 whose body lacks an output is an error,
never a success.

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
from typing import Any

import aiohttp

from node.dispatch.protocol import chain_body, output_from_answer
from node.errors import ContainerError, ContainerLost, ContainerUnavailable

#: Batch calls in flight to one container at once; further inputs wait for one to return.
MAX_POSTS = 2
#: Inputs in one batch call (the container's own limit is 64).
MAX_BATCH_ITEMS = 32
#: Input bytes in one batch call: hex doubles them, and the container's default body limit is 256 KiB.
MAX_BATCH_BYTES = 48 * 1024
#: Answers to the batch path that mean the container does not have it (an Infernet container).
NO_BATCH_PATH = (404, 405)


class HttpDispatcher:
    """Sends on-chain inputs to one container's `POST /service_output` (or `/service_output/batch`) and returns the
    ABI output bytes."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, timeout_s: float) -> None:
        self._session = session
        self._url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        #: Whether the container has the batch path: None until its first answer says.
        self.batches: bool | None = None
        self._waiting: collections.deque[tuple[bytes, asyncio.Future[bytes]]] = collections.deque()
        self._posts = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: Round trips made (batch calls and single calls), for tests and benchmarks.
        self.round_trips = 0

    @property
    def url(self) -> str:
        return self._url

    async def compute(self, job_id: str, input_: bytes) -> bytes:
        if self.batches is False:
            return await self._single(input_)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append((input_, future))
        self._pump()
        return await future

    def _pump(self) -> None:
        while self._waiting and self._posts < MAX_POSTS:
            items: list[tuple[bytes, asyncio.Future[bytes]]] = []
            size = 0
            while self._waiting and len(items) < MAX_BATCH_ITEMS:
                input_, future = self._waiting[0]
                if items and size + len(input_) > MAX_BATCH_BYTES:
                    break
                self._waiting.popleft()
                if not future.done():  # a cancelled job (reorg, shutdown) is not sent
                    items.append((input_, future))
                    size += len(input_)
            if items:
                self._posts += 1
                task = asyncio.create_task(self._post(items))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _post(self, items: list[tuple[bytes, asyncio.Future[bytes]]]) -> None:
        try:
            results = await self._batch([input_ for input_, _ in items])
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

    async def _batch(self, inputs: list[bytes]) -> list[bytes | BaseException]:
        """One round trip for `inputs`; each gets its output or its own error."""
        if self.batches is False:  # learnt while these waited
            return await self._singly(inputs)
        body = {"requests": [chain_body(i) for i in inputs]}
        status, payload = await self._call("/service_output/batch", body)
        if status in NO_BATCH_PATH or status == 413:  # no batch path, or this batch is over the body limit
            if status != 413:
                self.batches = False
            return await self._singly(inputs)
        answers = payload.get("answers") if isinstance(payload, dict) else None
        if status != 200 or not isinstance(answers, list) or len(answers) != len(inputs):
            reason = payload.get("error") if isinstance(payload, dict) else None
            raise ContainerError(f"container batch call failed: {reason or f'HTTP {status}'}", status=status)
        self.batches = True
        results: list[bytes | BaseException] = []
        for answer in answers:
            try:
                if not isinstance(answer, dict) or not isinstance(answer.get("status"), int):
                    raise ContainerError("container answered a batch item without a status")
                results.append(output_from_answer(answer["status"], answer.get("body"), "container"))
            except ContainerError as exc:
                results.append(exc)
        return results

    async def _singly(self, inputs: list[bytes]) -> list[bytes | BaseException]:
        return list(await asyncio.gather(*(self._single(i) for i in inputs), return_exceptions=True))

    async def _single(self, input_: bytes) -> bytes:
        status, payload = await self._call("/service_output", chain_body(input_))
        return output_from_answer(status, payload, "container")

    async def _call(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POSTs `body`; returns the status and the JSON answer (None when the body is empty or not JSON: a 404
        page, a proxy's error page)."""
        self.round_trips += 1
        try:
            async with self._session.post(f"{self._url}{path}", json=body, timeout=self._timeout) as resp:
                try:
                    payload: Any = await resp.json(content_type=None) if resp.content_length != 0 else None
                except ValueError:
                    if resp.status == 200:
                        raise
                    payload = None
                return resp.status, payload
        except TimeoutError:
            raise ContainerError(f"{self._url} did not answer within {self._timeout.total} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise ContainerUnavailable(f"{self._url} is down: {exc}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
            raise ContainerLost(f"{self._url} dropped the connection mid-call: {exc}") from None
        except aiohttp.ClientError as exc:
            raise ContainerError(f"{self._url} unreachable: {exc}") from None
        except ValueError:
            raise ContainerError(f"{self._url} answered with a body that is not JSON") from None

    async def healthy(self) -> bool:
        try:
            async with self._session.get(f"{self._url}/health", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


def _copy(exc: BaseException) -> BaseException:
    """Each waiting call raises an exception of its own (a raised exception collects its caller's traceback)."""
    if isinstance(exc, ContainerError):
        return type(exc)(str(exc), status=exc.status)
    return exc
