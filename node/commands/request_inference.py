"""`infera request`: ask the coordinator for an inference from the terminal and wait for the on-chain answer.

The request goes straight to the coordinator from an account (an EOA): `requestInference` accepts any caller as
the consumer, escrows the fee it sends, and skips the callback of a consumer without code, so no contract has to be
deployed and any model can be asked (the example consumers each serve one model and input format). An EOA cannot
store the answer, and `RequestFulfilled` carries only its hash, so the answer is read back from the delivering
transaction's calldata and checked against that hash.

Guarantees: the printed output is exactly the bytes the coordinator accepted (keccak-checked); a failure report or
no answer before the timeout is an `OpsError` saying so.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.registry import registry
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3

from node.chain.contracts import model_id
from node.commands.chain_ops import Contracts, OpsError, send_tx, wait_for
from node.config import ModelConfig

#: What a container's `GET /info` declares for a model that takes or gives raw bytes (no ABI).
RAW_BYTES = "raw bytes"


@dataclass(frozen=True)
class Codec:
    """How a model's container reads its input and writes its output (`GET /info`): ABI types, or raw bytes."""

    input_types: tuple[str, ...] = ()
    output_types: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    input_names: tuple[str, ...] = ()
    #: Input fields an off-chain caller may leave out, with the values the container fills in.
    input_defaults: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def parse(signature: str) -> tuple[str, ...]:
        """`(string,uint32)` → ("string", "uint32"); "raw bytes" → (). Raises `ValueError` naming `signature` when
        it is neither (`5`, `string` without parentheses, an unknown type): a model's input is never guessed."""
        if signature == RAW_BYTES:
            return ()
        inner = signature[1:-1] if signature.startswith("(") and signature.endswith(")") else None
        if inner is not None and "(" not in inner:
            types = tuple(t.strip() for t in inner.split(",") if t.strip())
        else:
            types = (signature,)  # nested tuples: eth-abi takes the whole signature as one type
        if inner is None or not all(registry.has_encoder(t) for t in types):
            raise ValueError(f"{signature!r} is neither an ABI tuple such as (string,uint8) nor {RAW_BYTES!r}")
        return types

    def encode_text(self, text: str) -> bytes:
        """`text` as the model's input: its UTF-8 bytes for a raw-bytes model, ABI `(string)` for a model that takes
        one string; raises `OpsError` for any other ABI input (pass the encoded input with `--input-hex`)."""
        if not self.input_types:
            return text.encode()
        if self.input_types == ("string",):
            return bytes(abi_encode(["string"], [text]))
        raise OpsError(
            f"this model takes ABI ({','.join(self.input_types)}), not one string: pass the encoded input "
            "with --input-hex"
        )

    def encode_json(self, fields: Any) -> bytes:
        """`fields` (a JSON object keyed by the container's input names, as its off-chain API takes them; fields
        with a default may be left out) as the model's ABI input. Raises `OpsError` naming an unknown, missing or
        mistyped field."""
        if not self.input_types or len(self.input_names) != len(self.input_types):
            raise OpsError("the container does not name its input fields: pass the encoded input with --input-hex")
        if not isinstance(fields, dict):
            raise OpsError(f"--input-json must be a JSON object with the fields {', '.join(self.input_names)}")
        unknown = [k for k in fields if k not in self.input_names]
        missing = [n for n in self.input_names if n not in fields and n not in self.input_defaults]
        if unknown or missing:
            raise OpsError(
                "--input-json: "
                + "; ".join(
                    ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])
                    + ([f"missing field(s) {', '.join(missing)}"] if missing else [])
                )
                + f" (the fields are {', '.join(self.input_names)})"
            )
        values = [fields.get(n, self.input_defaults.get(n)) for n in self.input_names]
        try:
            return bytes(abi_encode(list(self.input_types), values))
        except Exception as exc:  # eth-abi's EncodingError / TypeError / OverflowError name the value
            raise OpsError(f"--input-json does not fit ({','.join(self.input_types)}): {exc}") from None

    def decode_output(self, output: bytes) -> Any:
        """The output as values: text (or 0x-hex) for raw bytes, else the ABI values, named when the model says."""
        return _decode(output, self.output_types, self.output_names)[0]

    def decode_input(self, input_: bytes) -> Any:
        """The input as values, as `decode_output` does for the output (named by the container's input names)."""
        return _decode(input_, self.input_types, self.input_names)[0]

    def read_input(self, input_: bytes) -> tuple[Any, str | None]:
        """The input as `decode_input` gives it, and None when it decoded, else why it is shown as 0x-hex
        (`not decodable as (string,uint8)`, or `not UTF-8 text` for a raw-bytes model)."""
        return _decode(input_, self.input_types, self.input_names)

    def read_output(self, output: bytes) -> tuple[Any, str | None]:
        """The output as `decode_output` gives it, and why it is 0x-hex when it did not decode (as `read_input`)."""
        return _decode(output, self.output_types, self.output_names)


def _decode(data: bytes, types: tuple[str, ...], names: tuple[str, ...]) -> tuple[Any, str | None]:
    """`data` as values: text for raw bytes, else the ABI values of `types`, a dict by `names` when there is a name
    for each; with None, or 0x-hex with why when `data` is not UTF-8 text (raw bytes) or does not decode as
    `types`."""
    if not types:
        try:
            return data.decode(), None
        except UnicodeDecodeError:
            return "0x" + data.hex(), "not UTF-8 text"
    try:
        values = [_jsonable(v) for v in abi_decode(list(types), data)]
    except Exception:
        return "0x" + data.hex(), f"not decodable as ({','.join(types)})"
    if len(names) == len(values):
        return dict(zip(names, values, strict=True)), None
    return values, None


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def ask_codec(model: ModelConfig, *, timeout_s: float = 5) -> Codec:
    """The codec the model's container declares at `GET <url>/info`. Raises `OpsError` saying why it cannot be had,
    as one clause (`the 'echo' container at http://… does not answer (Connection refused)`, or naming an `input_abi`
    or `output_abi` that is no ABI: nothing is guessed)."""
    if model.url is None:
        raise OpsError(f"model {model.name!r} is served over MQTT, so its container cannot be asked from here")
    try:
        with urllib.request.urlopen(model.url.rstrip("/") + "/info", timeout=timeout_s) as resp:
            info = json.loads(resp.read())
        for key in ("input_abi", "output_abi"):
            try:
                Codec.parse(str(info[key]))
            except ValueError as exc:
                raise OpsError(
                    f"the {model.name!r} container at {model.url} declares a malformed {key}: {exc}"
                ) from None
        return Codec(
            Codec.parse(str(info["input_abi"])),
            Codec.parse(str(info["output_abi"])),
            tuple(str(n) for n in info.get("output_names", ())),
            tuple(str(n) for n in info.get("input_names", ())),
            dict(info.get("input_defaults") or {}),
        )
    except urllib.error.HTTPError as exc:
        why = f"answers GET /info with HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        why = f"does not answer ({getattr(exc, 'reason', None) or exc})"
    except (ValueError, KeyError, TypeError, AttributeError):
        why = "answers GET /info with something that is not its input and output ABI"
    raise OpsError(f"the {model.name!r} container at {model.url} {why}")


def model_codec(stages: list[ModelConfig], *, timeout_s: float = 5) -> Codec:
    """The codec of a model served by the containers of `stages` (one for a plain model; a pipeline's, in order):
    the first one's input, the last one's output. Raises `OpsError` (as `ask_codec`) when either cannot be asked."""
    first = ask_codec(stages[0], timeout_s=timeout_s)
    last = first if len(stages) == 1 else ask_codec(stages[-1], timeout_s=timeout_s)
    return Codec(first.input_types, last.output_types, last.output_names, first.input_names, first.input_defaults)


@dataclass(frozen=True)
class Answer:
    """The on-chain answer to a request sent by `infera request`: its output or failure reason, and where it landed."""

    request_id: int
    node: str
    tx_hash: str
    block_number: int
    output: bytes | None = None
    #: Set when the node reported that it cannot serve the request.
    failure: str | None = None


def send_request(
    c: Contracts,
    sender: LocalAccount,
    *,
    model: str,
    input_: bytes,
    fee_wei: int,
    callback_gas: int,
    max_fee_wei: int | None,
) -> tuple[int, int]:
    """Sends `requestInference(model, input, callback_gas)` paying `fee_wei`; returns (request id, its block)."""
    fn = c.coordinator.functions.requestInference(model_id(model), input_, callback_gas)
    receipt = send_tx(c.w3, fn, sender, what="request", reverts=c.reverts, value=fee_wei, max_fee_wei=max_fee_wei)
    (event,) = c.coordinator.events.RequestCreated().process_receipt(receipt)
    return int(event["args"]["requestId"]), int(receipt["blockNumber"])


def wait_answer(c: Contracts, request_id: int, *, from_block: int, timeout_s: float) -> Answer | None:
    """The first delivery (or failure report) of `request_id` from `from_block` on; None after `timeout_s`."""
    events = c.coordinator.events
    fulfilled = events.RequestFulfilled()
    reported = events.FailureReported()
    topics = [
        [_topic(fulfilled), _topic(reported)],
        "0x" + request_id.to_bytes(32, "big").hex(),
    ]
    cursor = from_block

    def poll() -> Answer | None:
        nonlocal cursor
        head = c.w3.eth.block_number
        if head < cursor:
            return None
        logs = c.w3.eth.get_logs(
            {"address": c.coordinator.address, "fromBlock": cursor, "toBlock": head, "topics": topics}
        )
        cursor = head + 1
        for raw in logs:
            if _hex(raw["topics"][0]) == _topic(fulfilled):
                args = fulfilled.process_log(raw)["args"]
                output = _delivered_output(c, raw["transactionHash"], request_id)
                if keccak(output) != bytes(args["outputHash"]):
                    raise OpsError(f"request {request_id}: the delivered output does not match its on-chain hash")
                return Answer(request_id, args["node"], _hex(raw["transactionHash"]), raw["blockNumber"], output)
            args = reported.process_log(raw)["args"]
            return Answer(
                request_id, args["node"], _hex(raw["transactionHash"]), raw["blockNumber"], failure=args["reason"]
            )
        return None

    answer: Answer | None = wait_for(poll, timeout_s=timeout_s, interval_s=0.25)
    return answer


def _topic(event: Any) -> str:
    return str(Web3.to_hex(hexstr=event.topic))


def _hex(value: Any) -> str:
    return "0x" + bytes(value).hex()


def _delivered_output(c: Contracts, tx_hash: Any, request_id: int) -> bytes:
    """The output for `request_id` in the calldata of the transaction that delivered it."""
    tx = c.w3.eth.get_transaction(tx_hash)
    fn, params = c.coordinator.decode_function_input(tx["input"])
    name = fn.fn_name
    if name in ("deliver", "finalizeDelivery"):
        return bytes(params["output"])
    if name == "deliverBatch":
        for item in params["items"]:
            rid, failed, data = item if isinstance(item, tuple | list) else tuple(item.values())
            if int(rid) == request_id and not failed:
                return bytes(data)
    raise OpsError(f"request {request_id} was delivered by {name}(), whose calldata this command cannot read")


def unknown_model(name: str, known: list[str]) -> str | None:
    """The line for `--model name` when it is not in the config but close to a model that is (a typo): `--model
    'echoo' is not in this config's [[models]]; did you mean 'echo'?`; None when no configured name is close (then
    it may be a model only other nodes serve)."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not close:
        return None
    return f"--model {name!r} is not in this config's [[models]]; did you mean {close[0]!r}?"
