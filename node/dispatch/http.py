"""Calls a model container over HTTP with the Infernet container protocol.

Guarantees: a 4xx is `ContainerRejected` (the input is bad; retrying cannot help); a 5xx, a timeout or a dropped
connection is a retryable `ContainerError` (`ContainerLost` when it dropped mid-call: the container may have crashed);
a refused connection is `ContainerUnavailable` (the container is down); a 200 whose body lacks an output is an error,
never a success.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from node.dispatch.protocol import chain_body, output_from_answer
from node.errors import ContainerError, ContainerLost, ContainerUnavailable


class HttpDispatcher:
    """Sends on-chain inputs to one container's `POST /service_output` and returns the ABI output bytes."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, timeout_s: float) -> None:
        self._session = session
        self._url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    @property
    def url(self) -> str:
        return self._url

    async def compute(self, job_id: str, input_: bytes) -> bytes:
        try:
            async with self._session.post(
                f"{self._url}/service_output", json=chain_body(input_), timeout=self._timeout
            ) as resp:
                payload: Any = await resp.json(content_type=None) if resp.content_length != 0 else None
                status = resp.status
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
        return output_from_answer(status, payload, "container")

    async def healthy(self) -> bool:
        try:
            async with self._session.get(f"{self._url}/health", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
