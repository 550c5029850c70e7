"""The container protocol on the wire, defined once: what the node sends a model container and what it answers.

Both sides import this module: the containers (`containers/runtime/server.py`, and the MQTT worker through it) build
their answers with it, the node (`node/dispatch/http.py`, `node/dispatch/mqtt.py`, `node/dispatch/protocol.py`) builds
its requests and reads the answers with it. It lives beside `containers/runtime/mqtt.py` (the MQTT topics and
messages, shared the same way) because a container must not need the node: it imports nothing but the standard
library, and every image that has the node has `containers/` too (node/Dockerfile copies both packages).

It is Infernet's container protocol (ritual-net/infernet-node `JobInput`, infernet-ml's containers), so an Infernet
container runs behind the Infera node unchanged, plus five things of Infera's own that an Infernet node ignores:

- `POST /service_output` takes a `RequestBody` `{source, destination, data, requires_proof}`. `source` 0 (chain):
  `data` is the hex of the ABI-encoded input; 1 (off-chain): a JSON object keyed by the model's input names.
- The answer for `destination` 0 is a `ChainAnswer`: Infernet's five keys with `raw_output` the hex of the
  ABI-encoded output, and `abi_output: true` (Infera's) telling the node to deliver `raw_output` as it is. For
  `destination` 1 it is an `OffchainAnswer` `{"output": {...}}` keyed by the model's output names, a bytes field
  as a `0x`-hex string (`json_value`). A refusal or failure is an `ErrorAnswer`
  `{"error": "..."}` with a 4xx (bad input: retrying cannot help) or a 5xx status, never a 200.
- `POST /service_output/batch` (Infera's) takes a `BatchRequest` `{"requests": [body, ...]}` of up to
  `MAX_BATCH_ITEMS` and answers a `BatchAnswer` `{"answers": [{"status": s, "body": {...}}, ...]}`, each item what
  `/service_output` would have answered for it. A container without it answers 404.
- Attestation (Infera's): a body with `requires_proof: true` for `source` 0 carries an `Attestation`
  `{chain_id, coordinator, request_id, node}` (what the proof is bound to). A container started with an attestation
  key answers `proof` = hex of `abi.encode(bytes32 modelDigest, bytes signature)` (`containers/runtime/attest.py`:
  the digest it signs is `AttestationVerifier`'s); one without a key refuses with a 400 (`NO_ATTESTATION_KEY`).
- Consensus (Infera's): a body with `consensus: true` (the node sends it for k-of-n consensus requests, where the
  contract pays the nodes whose output bytes are identical) is answered in the model's consensus form, which
  `GET /info` states as `"consensus": {"form": ..., "description": ..., ...}`: the same output ABI, with values
  canonicalized (a score rounded down to a step, an embedding re-quantized to a fixed scale) so that honest nodes
  on other hardware, precisions and thread counts deliver the same bytes. It applies to both destinations alike (an
  off-chain caller comparing nodes gets the same canonical values as JSON). A model with no form of its own is
  `{"form": "bytes"}`: its output is compared as it is, which is also what an Infernet container that ignores the
  key answers. Proofs sign the canonical bytes (what is delivered). `consensus` must be a JSON boolean (else 400);
  the stream route refuses it for a model whose form is not "bytes".
- `POST /service_output/stream` (Infera's) streams a streaming model's output as Server-Sent Events: one
  `data: {"token": "..."}` event a piece, then `event: done` (`data: {}`), or `event: error` (`data: {"error": ...}`)
  when the model fails after the stream began. A refusal before it began is an ordinary JSON error answer.
"""

from __future__ import annotations

import json
import re
from typing import Any, NotRequired, TypedDict

#: Where the input comes from and the output goes (Infernet's `JobLocation`).
SOURCE_CHAIN = 0
SOURCE_OFFCHAIN = 1

SERVICE_OUTPUT_PATH = "/service_output"
BATCH_PATH = "/service_output/batch"
STREAM_PATH = "/service_output/stream"
HEALTH_PATH = "/health"
INFO_PATH = "/info"

#: Deepest nesting of arrays and objects parsed in a JSON body (both sides: a request body in a container, an answer
#: in the node). Deeper is refused before parsing: a dependency (py_ecc, through eth_account) raises the interpreter's
#: recursion limit to 100,000, so a deeply nested body would crash the process in the JSON decoder (a segfault, not a
#: RecursionError) instead of failing one call.
MAX_JSON_DEPTH = 128
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def parse_json(raw: bytes | bytearray | str) -> Any:
    """The JSON value of `raw` (a body, UTF-8 when bytes). Raises `ValueError` when it is not JSON or is nested
    deeper than `MAX_JSON_DEPTH` arrays/objects (checked before parsing, without touching the recursion limit, so it
    is safe with threads running: strings are dropped, then innermost `[]`/`{}` pairs are removed `MAX_JSON_DEPTH`
    times; a bracket left over means deeper, or unbalanced)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH:
        brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", data))
        for _ in range(MAX_JSON_DEPTH):
            shorter = brackets.replace(b"[]", b"").replace(b"{}", b"")
            if len(shorter) == len(brackets):
                break
            brackets = shorter
        if brackets:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} (or unbalanced brackets)")
    return json.loads(raw)


#: Items one batch call may hold (the container's limit).
MAX_BATCH_ITEMS = 64
#: The keys of Infernet's on-chain answer; all must be present for it to apply (as in Infernet's node).
INFERNET_KEYS = ("raw_input", "processed_input", "raw_output", "processed_output", "proof")
#: The key by which Infera's containers say `raw_output` is the ABI output, to be delivered as it is.
ABI_OUTPUT_FLAG = "abi_output"

#: The body key asking for the answer in the model's consensus form (`RequestBody.consensus`), and /info's key
#: stating that form.
CONSENSUS_KEY = "consensus"

#: What a container without an attestation key answers (400) to a body that requires a proof.
NO_ATTESTATION_KEY = "this container has no attestation key (start it with --attestation-key-file)"

#: Server-Sent Event names of a stream (a piece is an unnamed event).
STREAM_DONE = "done"
STREAM_ERROR = "error"


class Attestation(TypedDict):
    """What an attestation proof is bound to (Infera's): the chain id, the coordinator (0x address), the request id
    (a decimal string: it may not fit a JSON number elsewhere) and the node (0x address) that delivers it."""

    chain_id: int
    coordinator: str
    request_id: str
    node: str


class RequestBody(TypedDict):
    """What `POST /service_output` takes (Infernet's `JobInput`, plus Infera's `attestation` and `consensus`)."""

    source: int
    destination: int
    data: Any
    requires_proof: NotRequired[bool]
    attestation: NotRequired[Attestation]
    #: True for a k-of-n consensus request: answer in the model's consensus form (absent means false).
    consensus: NotRequired[bool]


class ChainAnswer(TypedDict):
    """A container's answer for `destination` 0: hex fields, `raw_output` the ABI-encoded output."""

    raw_input: str
    processed_input: str
    raw_output: str
    processed_output: str
    proof: str
    abi_output: bool


class OffchainAnswer(TypedDict):
    """A container's answer for `destination` 1: the output fields by the model's output names."""

    output: dict[str, Any]


class ErrorAnswer(TypedDict):
    """A container's refusal (4xx) or failure (5xx)."""

    error: str


class BatchRequest(TypedDict):
    """What `POST /service_output/batch` takes."""

    requests: list[Any]


class BatchItem(TypedDict):
    """One item of a batch answer: the status and body `/service_output` would have answered."""

    status: int
    body: dict[str, Any]


class BatchAnswer(TypedDict):
    """What `POST /service_output/batch` answers, one item per request, in order."""

    answers: list[BatchItem]


def chain_request(input_: bytes, attestation: Attestation | None = None, *, consensus: bool = False) -> RequestBody:
    """The body for an on-chain request's ABI-encoded input; with `attestation`, one that requires a proof bound to
    it; with `consensus`, one answered in the model's consensus form (the key is left out when false, so a plain
    body is byte for byte what it was)."""
    body: RequestBody = {"source": SOURCE_CHAIN, "destination": SOURCE_CHAIN, "data": input_.hex()}
    body["requires_proof"] = attestation is not None
    if attestation is not None:
        body["attestation"] = attestation
    if consensus:
        body["consensus"] = True
    return body


def attestation(chain_id: int, coordinator: str, request_id: int, node: str) -> Attestation:
    """The attestation context of request `request_id` on `coordinator` (chain `chain_id`), delivered by `node`."""
    return {"chain_id": chain_id, "coordinator": coordinator, "request_id": str(request_id), "node": node}


def offchain_request(data: dict[str, Any]) -> RequestBody:
    """The body for an off-chain job's JSON input (the model's input fields by name)."""
    return {"source": SOURCE_OFFCHAIN, "destination": SOURCE_OFFCHAIN, "data": data, "requires_proof": False}


def batch_request(bodies: list[RequestBody]) -> BatchRequest:
    """The body of one batch call carrying `bodies`."""
    return {"requests": list(bodies)}


def chain_answer(raw_input: bytes | None, output: bytes, proof: bytes = b"") -> ChainAnswer:
    """The answer carrying `output` (ABI-encoded) to be delivered on-chain as it is, with its `proof` (empty when
    none was asked for)."""
    return {
        "raw_input": raw_input.hex() if raw_input is not None else "",
        "processed_input": "",
        "raw_output": output.hex(),
        "processed_output": "",
        "proof": proof.hex(),
        "abi_output": True,  # ABI_OUTPUT_FLAG
    }


def json_value(value: Any) -> Any:
    """`value` as JSON can carry it: bytes (and bytearray) become `0x`-hex strings, tuples lists, in dicts and lists
    at any depth; str, int, float, bool and None are kept. Raises `TypeError` for anything else (or a non-str dict
    key), naming its type."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("output has a dict key that is not a string")
        return {key: json_value(item) for key, item in value.items()}
    raise TypeError(f"output of type {type(value).__name__} is not JSON serializable")


def offchain_answer(output: dict[str, Any]) -> OffchainAnswer:
    """The answer carrying an off-chain job's output fields, as `json_value` makes them (bytes as `0x`-hex). Raises
    `TypeError` when a field is of a type JSON cannot carry."""
    return {"output": json_value(output)}


def error_answer(reason: str) -> ErrorAnswer:
    """The body of a refusal or failure."""
    return {"error": reason}


def stream_piece(piece: str) -> bytes:
    """One piece of a streamed output, as an SSE event."""
    return f"data: {json.dumps({'token': piece})}\n\n".encode()


def stream_done() -> bytes:
    """The event that ends a stream that succeeded."""
    return f"event: {STREAM_DONE}\ndata: {{}}\n\n".encode()


def stream_error(reason: str) -> bytes:
    """The event that ends a stream whose model failed."""
    return f"event: {STREAM_ERROR}\ndata: {json.dumps(error_answer(reason))}\n\n".encode()


class StreamReader:
    """Reads a stream's SSE lines back into events: `feed(line)` returns `(event, data)` once a `data:` line completes
    one (`event` "" for a piece, `STREAM_DONE` or `STREAM_ERROR`), else None. `data` is the JSON text, left to the
    caller to parse (the node parses outside text with its own depth limit)."""

    def __init__(self) -> None:
        self._event = ""

    def feed(self, line: str) -> tuple[str, str] | None:
        line = line.rstrip("\r\n")
        if line.startswith("event:"):
            self._event = line[6:].strip()
        elif line.startswith("data:"):
            event, self._event = self._event, ""
            return event, line[5:].strip()
        elif not line:
            self._event = ""
        return None
