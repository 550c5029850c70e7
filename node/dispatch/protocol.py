"""The container protocol's answer, read the same way whether it came over HTTP or MQTT."""

from __future__ import annotations

from typing import Any

from node.errors import ContainerError, ContainerRejected

SOURCE_CHAIN = 0
DESTINATION_CHAIN = 0


def chain_body(input_: bytes) -> dict[str, Any]:
    """The `/service_output` body for an on-chain request."""
    return {"source": SOURCE_CHAIN, "destination": DESTINATION_CHAIN, "data": input_.hex(), "requires_proof": False}


def output_from_answer(status: int, payload: Any, where: str) -> bytes:
    """The ABI output bytes of a container's answer.

    A 4xx is `ContainerRejected` (bad input: retrying cannot help), any other non-200 a retryable
    `ContainerError`; a 200 without a usable output is an error too, never a success.
    """
    reason = payload.get("error") if isinstance(payload, dict) else None
    if 400 <= status < 500:
        raise ContainerRejected(f"{where} rejected the input: {reason or f'HTTP {status}'}", status=status)
    if status != 200:
        raise ContainerError(f"{where} failed: {reason or f'HTTP {status}'}", status=status)
    if not isinstance(payload, dict):
        raise ContainerError(f"{where} answered 200 without a JSON object", status=status)
    # Ours put the ABI output in raw_output; some Infernet containers use processed_output.
    for key in ("raw_output", "processed_output"):
        value = payload.get(key)
        if value:
            if not isinstance(value, str):
                raise ContainerError(f"{where}'s {key} is not a hex string", status=status)
            try:
                return bytes.fromhex(value.removeprefix("0x"))
            except ValueError:
                raise ContainerError(f"{where}'s {key} is not hex", status=status) from None
    raise ContainerError(f"{where} answered 200 without raw_output", status=status)
