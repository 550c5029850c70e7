"""The container protocol's answer, classified once, the same way whether it came over HTTP or MQTT.

The wire format itself (request bodies, answer shapes, paths, the stream's events) is `containers/runtime/wire.py`,
shared with the containers; this module is what the node makes of an answer.

A container's answer (status, JSON body, `Retry-After`) becomes either the bytes to deliver on-chain or one of the
`ContainerError` family, whose `action` (`node.errors.Action`) is what the core does about it:

| answer                                                         | raises                 | action            |
|----------------------------------------------------------------|------------------------|-------------------|
| 2xx with a usable body                                         | (the output)           |                   |
| 408, 425, 429, 502, 503, 504 (`Retry-After` kept, capped 60 s) | `ContainerError`       | `RETRY`           |
| any other 4xx                                                  | `ContainerRejected`    | `REFUSED`         |
| any other 5xx, 1xx, 3xx                                        | `ContainerError`       | `RETRY`           |
| 2xx, body empty / not JSON / not an object / wrong types / over `MAX_ANSWER_BYTES` | `ContainerError` | `RETRY` |

The output of a usable 2xx body follows Infernet's node (ritual-net/infernet-node, `src/chain/processor.py`,
`ChainProcessor._serialize_container_output`), except for Infera's own containers:

- `{"abi_output": true, "raw_output": "<hex>", ...}` (Infera's containers): the raw_output bytes, delivered as they
  are (they are the ABI-encoded output already), and the `proof` bytes (an attestation, when the request body
  required one; empty otherwise).
- every one of `raw_input, processed_input, raw_output, processed_output, proof` present (Infernet's on-chain
  shape): `abi.encode(bytes raw_output, bytes processed_output)`, each the hex it holds (`null` is empty bytes);
  the proof is `bytes(proof)` the same way.
- anything else (`{"output": "..."}`, Infernet's hello-world): `abi.encode(string(str(answer)))`, where `str` is
  Python's `str` of the decoded JSON object, as Infernet's node does; no proof.

An off-chain job's answer (`destination` 1) is classified by the same status table; its 2xx body must be an
`OffchainAnswer` (`{"output": ...}`), and the output is that value (`offchain_output`).

Reasons taken from a container's answer are cut to `MAX_REASON_CHARS`, so whatever it says fits in a failure report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode

from containers.runtime.wire import ABI_OUTPUT_FLAG, INFERNET_KEYS
from containers.runtime.wire import parse_json as parse_json  # the node's too (depth-guarded)
from node.errors import ContainerError, ContainerRejected, short

#: Bytes of one answer body read at most; a longer body is refused (retryable) and never held beyond this.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
#: Bytes of a non-2xx answer's body read (only its `error` is of use); the rest is dropped unread.
MAX_ERROR_BYTES = 64 * 1024
#: Characters of a container's own words (its `error`, its status line) kept in an error message.
MAX_REASON_CHARS = 160
#: Statuses that say "not now" rather than "never": retried, honouring `Retry-After`.
RETRYABLE_4XX_5XX = frozenset({408, 425, 429, 502, 503, 504})
#: Statuses that say "too many calls" (or "busy"): a container that keeps answering them is rate-limiting the node.
RATE_LIMITED = frozenset({429, 503})


@dataclass(frozen=True)
class Output:
    """What a container's answer delivers on-chain: `output` (bytes for `deliver`) and `proof` (bytes, empty when the
    container gave none)."""

    output: bytes
    proof: bytes = b""


def classify(status: int, payload: Any, where: str, *, retry_after: float | None = None) -> Output:
    """The on-chain `Output` of a container's answer: HTTP `status`, its decoded JSON body `payload` (None when the
    body was empty or not JSON), `retry_after` (seconds, from `Retry-After`). `where` names the container in errors.

    Raises `ContainerRejected` (a 4xx other than those in `RETRYABLE_4XX_5XX`: retrying cannot help), or a retryable
    `ContainerError` (with `status` and `retry_after_s`) for every other non-2xx and for a 2xx without a usable body.
    """
    raise_for_status(status, payload, where, retry_after=retry_after)
    try:
        return onchain_output(payload, where)
    except ContainerError as exc:
        exc.status = status
        raise


def raise_for_status(status: int, payload: Any, where: str, *, retry_after: float | None = None) -> None:
    """Returns for a 2xx; raises what a non-2xx answer means (the table in the module docstring), quoting the body's
    `error` when it has one."""
    if 200 <= status < 300:
        return
    reason = payload.get("error") if isinstance(payload, dict) else None
    said = short(reason) if reason else f"HTTP {status}"
    if 400 <= status < 500 and status not in RETRYABLE_4XX_5XX:
        raise ContainerRejected(f"{where} rejected the input: {said}", status=status)
    if status in RETRYABLE_4XX_5XX and reason:
        said = f"HTTP {status}: {said}"
    raise ContainerError(f"{where} failed: {said}", status=status, retry_after_s=retry_after)


def offchain_output(status: int, payload: Any, where: str, *, retry_after: float | None = None) -> Any:
    """The output of an off-chain job's answer: the `output` of a 2xx `{"output": ...}` body. Raises as `classify`
    does, and a retryable `ContainerError` for a 2xx without `output`."""
    raise_for_status(status, payload, where, retry_after=retry_after)
    if not isinstance(payload, dict) or "output" not in payload:
        raise ContainerError(f"{where} answered {status} without an output", status=status)
    return payload["output"]


def onchain_output(payload: Any, where: str) -> Output:
    """The on-chain `Output` of a 2xx answer's decoded JSON body (rules in the module docstring). Raises a retryable
    `ContainerError` when the body is not a JSON object or a field has the wrong type."""
    if not isinstance(payload, dict):
        kind = "no body" if payload is None else f"a JSON {type(payload).__name__}"
        raise ContainerError(f"{where} answered 2xx with {kind}, not a JSON object")
    if payload.get(ABI_OUTPUT_FLAG) is True:
        raw = _hex(payload.get("raw_output"), "raw_output", where)
        if not raw:
            raise ContainerError(f"{where} answered 2xx without raw_output")
        return Output(raw, _hex(payload.get("proof"), "proof", where))
    if all(key in payload for key in INFERNET_KEYS):
        raw = _hex(payload["raw_output"], "raw_output", where)
        processed = _hex(payload["processed_output"], "processed_output", where)
        return Output(encode(["bytes", "bytes"], [raw, processed]), _hex(payload["proof"], "proof", where))
    try:
        text = str(payload)
    except RecursionError:
        raise ContainerError(f"{where} answered an object nested too deep to print") from None
    return Output(encode(["string"], [text]))


def output_from_answer(status: int, payload: Any, where: str, *, retry_after: float | None = None) -> bytes:
    """The bytes to deliver for a container's answer; `classify` without the proof (errors as `classify`)."""
    return classify(status, payload, where, retry_after=retry_after).output


def _hex(value: Any, key: str, where: str) -> bytes:
    """A field holding hex (with or without `0x`; null is empty bytes, as in Infernet's node)."""
    if value is None:
        return b""
    if not isinstance(value, str):
        raise ContainerError(f"{where}'s {key} is not a hex string")
    try:
        return bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise ContainerError(f"{where}'s {key} is not hex") from None
