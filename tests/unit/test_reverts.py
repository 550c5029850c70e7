"""The one revert decoder (node/chain/reverts.py) and `infera decode`, over every custom error of every contract the
forge build compiles from `src/`: random arguments of each error's types (hypothesis, eth-abi's own strategies)
encode, decode back by name, and read the same."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_abi.tools import get_abi_strategy
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from node.chain.artifacts import signature, source_abis
from node.chain.contracts import CoordinatorAbi
from node.chain.reverts import ErrorCatalog, ErrorDef, RevertDataError, format_value, parse_hex, revert_data
from node.chain.rpc import RpcError, as_reverted
from node.cli import app

pytestmark = pytest.mark.usefixtures("contracts_built")

CATALOG = ErrorCatalog.from_artifacts()
DEFINITIONS = CATALOG.definitions
#: What every revert of the node's log and of `infera decode` is decoded with: one place.
ABI = CoordinatorAbi.from_artifacts()


def every_abi_error() -> list[tuple[str, dict[str, Any]]]:
    """(contract, ABI entry) of every custom error in every artifact of `src/`, shared ones once per contract."""
    return [(name, e) for name, _, abi in source_abis() for e in abi if e["type"] == "error"]


def normal(value: Any) -> Any:
    """A value as eth-abi decodes it: arrays and structs as tuples, addresses in lower case."""
    if isinstance(value, list | tuple):
        return tuple(normal(v) for v in value)
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value.lower()
    return value


def test_the_catalog_holds_the_errors_of_every_kind_of_contract() -> None:
    """A guard on the table-driven tests below: they must run over all of these, not a handful."""
    contracts = {c for d in DEFINITIONS for c in d.contracts}
    assert {
        "ICoordinator",
        "IConsensus",
        "IEscrow",
        "INodeRegistry",
        "ISubscriptionManager",
        "VerifierBase",
        "ReexecutionVerifier",
        "InferenceConsumer",
        "SubscriptionConsumer",
        "InferaLLM",
        "SentimentConsumer",
        "PromptConsumer",
    } <= contracts
    assert len(DEFINITIONS) >= 80
    assert not any(c.endswith("Test") or c in ("MockNode", "RevertingConsumer") for c in contracts)  # no test actors


@pytest.mark.parametrize(("contract", "entry"), every_abi_error(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_error_of_every_abi_is_known_by_its_selector(contract: str, entry: dict[str, Any]) -> None:
    definition = CATALOG.lookup(keccak(text=signature(entry))[:4])
    assert definition is not None
    assert definition.name == entry["name"]
    assert definition.signature == signature(entry)
    assert contract in definition.contracts


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda d: d.signature)
@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_arguments_of_every_error_round_trip(definition: ErrorDef, data: st.DataObject) -> None:
    args = [data.draw(get_abi_strategy(t), label=n) for n, t in definition.params]
    raw = definition.selector + encode(definition.types, args)
    decoded = CATALOG.decode(raw)
    assert decoded.kind == "custom"
    assert decoded.name == definition.name
    assert decoded.problem is None
    assert normal(decoded.args) == normal(args)
    assert [(n, t) for n, t, _ in decoded.fields] == list(definition.params)
    shown = str(decoded)
    assert shown.startswith(f"{definition.name}(")
    assert all(f"{n}=" in shown for n, _ in definition.params if n)
    assert ABI.decode_error(raw) == decoded  # the node's decoder is this one


@pytest.mark.parametrize("definition", [d for d in DEFINITIONS if d.params], ids=lambda d: d.signature)
def test_data_cut_short_is_named_and_said_to_be_cut(definition: ErrorDef) -> None:
    zeros = encode(definition.types, [_zero(t) for t in definition.types])
    decoded = CATALOG.decode(definition.selector + zeros[:-1])
    assert decoded.name == definition.name
    assert decoded.problem is not None
    assert not decoded.complete
    assert "do not decode" in str(decoded)


def test_a_bare_selector_names_the_error_without_arguments() -> None:
    [definition] = [d for d in DEFINITIONS if d.signature == "InvalidDeadline(uint64,uint64)"]
    decoded = CATALOG.decode(definition.selector)
    assert decoded.name == "InvalidDeadline"
    assert decoded.definition == definition
    assert str(definition) == "InvalidDeadline(uint64 deadline, uint64 latestAllowed)"


def test_an_error_string_and_panics_are_named() -> None:
    error = keccak(text="Error(string)")[:4] + encode(["string"], ['say "no"'])
    assert str(CATALOG.decode(error)) == 'Error(reason="say \\"no\\"")'
    assert CATALOG.decode(error).kind == "error"
    for code, meaning in [(0x11, "overflow"), (0x12, "division or modulo by zero"), (0x32, "out of bounds")]:
        panic = CATALOG.decode(keccak(text="Panic(uint256)")[:4] + encode(["uint256"], [code]))
        assert panic.kind == "panic"
        assert meaning in str(panic)
        assert str(panic).startswith(f"Panic(0x{code:02x}: ")
    odd = CATALOG.decode(keccak(text="Panic(uint256)")[:4] + encode(["uint256"], [0x99]))
    assert "not one Solidity defines" in str(odd)


def test_a_selector_of_no_infera_contract_is_shown_and_said_not_to_be_ours() -> None:
    own = keccak(text="MyConsumerSaysNo(uint256)")[:4]
    decoded = CATALOG.decode(own + encode(["uint256"], [1]))
    assert decoded.kind == "unknown"
    assert decoded.name is None
    assert (
        str(decoded) == f"error 0x{own.hex()} (not one of Infera's errors: the consumer's own, or another contract's)"
    )
    assert CATALOG.name_of(own).startswith(f"0x{own.hex()} (not one of Infera's errors")
    assert CATALOG.decode(b"").kind == "empty"
    assert "without data" in str(CATALOG.decode(b""))


def test_skipped_batch_items_are_named_by_their_selector() -> None:
    """`DeliverySkipped` carries only the selector: the receipt reader names it with the same decoder."""
    [closed] = [d for d in DEFINITIONS if d.name == "RequestClosed"]
    node_topic = "0x" + "00" * 12 + "11" * 20
    log = {
        "address": "0x" + "22" * 20,
        "topics": [ABI.topic("DeliverySkipped"), "0x" + (7).to_bytes(32, "big").hex(), node_topic],
        "data": "0x" + closed.selector.hex() + "00" * 28,
    }
    assert ABI.delivery_outcomes([log], "0x" + "11" * 20) == {7: "RequestClosed"}
    log["data"] = "0xdeadbeef" + "00" * 28
    assert ABI.delivery_outcomes([log], "0x" + "11" * 20)[7].startswith("0xdeadbeef (not one of Infera's errors")


@pytest.mark.parametrize(
    ("exc_data", "message", "expected"),
    [
        ("0x0f0b00b7" + "00" * 64, "execution reverted", "InvalidDeadline(deadline=0, latestAllowed=0)"),
        ({"data": "0x2c5211c6"}, "execution reverted", "InvalidAmount()"),
        (None, "execution reverted: custom error 0x2c5211c6", "InvalidAmount()"),
        (
            None,
            "execution reverted: custom error 0x0f0b00b7: " + "00" * 31 + "05" + "00" * 31 + "0a",
            "InvalidDeadline(deadline=5, latestAllowed=10)",
        ),
        ("0x12345678", "execution reverted", "error 0x12345678 (not one of Infera's errors"),
        ("0x", "execution reverted", "a revert without data"),
    ],
)
def test_the_node_names_reverts_wherever_the_endpoint_puts_the_data(exc_data: Any, message: str, expected: str) -> None:
    reverted = as_reverted(RpcError("eth_call", 3, message, exc_data), ABI, "deliver of request 1")
    assert str(reverted).startswith(f"deliver of request 1 reverted: {expected}")


def test_only_infera_errors_and_error_strings_are_acted_on_by_name() -> None:
    """`TxReverted.error` is what the node's refusal rules match: a panic or a foreign selector is not a name."""
    panic = "0x" + (keccak(text="Panic(uint256)")[:4] + encode(["uint256"], [0x11])).hex()
    assert as_reverted(RpcError("eth_call", 3, "reverted", panic), ABI, "x").error is None
    assert as_reverted(RpcError("eth_call", 3, "reverted", "0x12345678"), ABI, "x").error is None
    assert as_reverted(RpcError("eth_call", 3, "reverted", "0x2c5211c6"), ABI, "x").error == "InvalidAmount"
    assert revert_data(RpcError("eth_call", 3, "execution reverted", None)) is None


@pytest.mark.parametrize("text", ["zz", "0x12g4", "0xabc", "0x 12 3"])
def test_text_that_is_not_whole_hex_bytes_is_refused_in_words(text: str) -> None:
    with pytest.raises(RevertDataError):
        parse_hex(text)


def test_values_read_as_a_person_writes_them() -> None:
    assert format_value("0x" + "ab" * 20) == "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"
    assert format_value(b"\x01\x02") == "0x0102"
    assert format_value([1, (True, "x")]) == '[1, (true, "x")]'


# --------------------------------------------------------------------------------------------- infera decode

RUNNER = CliRunner()


def decode_cli(*args: str) -> Any:
    return RUNNER.invoke(app, ["decode", *args])


@pytest.mark.parametrize(
    "signature",
    [
        "InvalidCallbackGasLimit(uint32,uint32)",
        "InsufficientBalance(address,address,uint256,uint256)",
        "CommitmentMismatch(uint256,bytes32,bytes32)",
        "TransferFailed(address,uint256)",
        "EmptySchema()",
    ],
)
@settings(max_examples=5, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_infera_decode_round_trips_errors_as_json(signature: str, data: st.DataObject) -> None:
    [definition] = [d for d in DEFINITIONS if d.signature == signature]
    args = [data.draw(get_abi_strategy(t)) for t in definition.types]
    raw = definition.selector + encode(definition.types, args)
    result = decode_cli(raw.hex(), "--json")  # without 0x
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["name"] == definition.name
    assert answer["signature"] == signature
    assert answer["selector"] == "0x" + definition.selector.hex()
    assert [a["name"] for a in answer["args"]] == [n for n, _ in definition.params]
    for arg, value in zip(answer["args"], args, strict=True):
        expected = str(value) if isinstance(value, int) else "0x" + value.hex() if isinstance(value, bytes) else value
        assert arg["value"] == expected


def test_infera_decode_prints_the_error_with_its_arguments() -> None:
    raw = keccak(text="InvalidCallbackGasLimit(uint32,uint32)")[:4] + encode(["uint32", "uint32"], [0, 2_000_000])
    result = decode_cli("0x" + raw.hex())
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "InvalidCallbackGasLimit(callbackGasLimit=0, maxCallbackGasLimit=2000000)"
    assert "ICoordinator" in result.stdout
    assert any(line.split()[:3] == ["maxCallbackGasLimit", "2000000", "(uint32)"] for line in lines)


def test_infera_decode_names_a_bare_selector_and_its_signature() -> None:
    result = decode_cli("0x0f0b00b7")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "InvalidDeadline(uint64 deadline, uint64 latestAllowed)"


def test_infera_decode_names_panic_codes() -> None:
    result = decode_cli((keccak(text="Panic(uint256)")[:4] + encode(["uint256"], [0x12])).hex())
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "Panic(0x12: division or modulo by zero)"


@pytest.mark.parametrize(
    ("text", "code", "says"),
    [
        ("0x12345678", 1, "0x12345678 is not one of Infera's errors"),
        ("nonsense", 2, "'nonsense' is not hex: 'n' is not a hex digit"),
        ("0x0f0b00b", 2, "7 hex digits is not a whole number of bytes"),
        ("0x", 2, "no data to decode"),
        ("0x0f0b", 2, "shorter than an error's 4-byte selector"),
        ("0x0f0b00b7" + "00" * 40, 1, "its arguments do not decode (InsufficientDataBytes"),
        ("0x2c5211c6ff", 1, "the data has 1 byte(s) after its arguments (InvalidAmount())"),
    ],
)
def test_infera_decode_refuses_garbage_in_one_line_without_a_traceback(text: str, code: int, says: str) -> None:
    result = decode_cli(text)
    assert result.exit_code == code, result.output
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_infera_decode_says_when_there_is_no_build(tmp_path: Any) -> None:
    result = decode_cli("0x0f0b00b7", "--artifacts-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "no contract artifacts" in result.stderr


def _zero(kind: str) -> Any:
    """The zero value of an ABI type."""
    if kind.endswith("]"):
        return []
    if kind == "address":
        return "0x" + "00" * 20
    if kind.startswith("bytes"):
        return b"" if kind == "bytes" else b"\0" * int(kind[5:])
    if kind == "string":
        return ""
    if kind == "bool":
        return False
    return 0
