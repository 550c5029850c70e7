"""Calls a model container over HTTP with the Infernet container protocol.

Guarantees: a 4xx is `ContainerRejected` (the input is bad; retrying cannot help), a 5xx, a timeout or a refused
connection is a retryable `ContainerError`; a 200 whose body lacks an output is an error, never a success.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from node.errors import ContainerError, ContainerRejected

log = logging.getLogger(__name__)

SOURCE_CHAIN = 0
DESTINATION_CHAIN = 0


def _hex_bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return bytes.fromhex(value.removeprefix("0x"))


class HttpDispatcher:
    """Sends on-chain inputs to one container's `POST /service_output` and returns the ABI output bytes."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, timeout_s: float) -> None:
        self._session = session
        self._url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    @property
    def url(self) -> str:
        return self._url

    async def compute(self, input_: bytes) -> bytes:
        body = {
            "source": SOURCE_CHAIN,
            "destination": DESTINATION_CHAIN,
            "data": input_.hex(),
            "requires_proof": False,
        }
        try:
            async with self._session.post(f"{self._url}/service_output", json=body, timeout=self._timeout) as resp:
                payload: Any = await resp.json(content_type=None) if resp.content_length != 0 else None
                status = resp.status
        except TimeoutError:
            raise ContainerError(f"{self._url} did not answer within {self._timeout.total} s") from None
        except aiohttp.ClientError as exc:
            raise ContainerError(f"{self._url} unreachable: {exc}") from None
        except ValueError:
            raise ContainerError(f"{self._url} answered with a body that is not JSON") from None

        reason = payload.get("error") if isinstance(payload, dict) else None
        if 400 <= status < 500:
            raise ContainerRejected(f"container rejected the input: {reason or f'HTTP {status}'}", status=status)
        if status != 200:
            raise ContainerError(f"container failed: {reason or f'HTTP {status}'}", status=status)
        if not isinstance(payload, dict):
            raise ContainerError("container answered 200 without a JSON object", status=status)
        # Ours put the ABI output in raw_output; some Infernet containers use processed_output.
        for key in ("raw_output", "processed_output"):
            value = payload.get(key)
            if value:
                try:
                    return _hex_bytes(value)
                except ValueError:
                    raise ContainerError(f"container's {key} is not hex", status=status) from None
        raise ContainerError("container answered 200 without raw_output", status=status)

    async def healthy(self) -> bool:
        try:
            async with self._session.get(f"{self._url}/health", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
