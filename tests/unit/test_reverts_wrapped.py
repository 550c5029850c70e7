"""Wrapped reverts and pasted input: the one revert decoder (node/chain/reverts.py) names the revert that an
`Error(string)` rethrow, an error of Infera's with a `bytes` argument, or another contract's error carries, up to
`MAX_WRAP_DEPTH` deep, never raising and bounded on huge input; `infera decode` takes what cast and anvil print."""

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

from node.chain.artifacts import source_abis
from node.chain.contracts import CoordinatorAbi
from node.chain.reverts import ERROR_STRING, MAX_WRAP_DEPTH, MAX_WRAP_SCAN_BYTES, MAX_WRAP_TRIES, ErrorCatalog, ErrorDef
from node.chain.rpc import RpcError, as_reverted
from node.cli import app
from tests.unit.test_reverts import normal

pytestmark = pytest.mark.usefixtures("contracts_built")

CATALOG = ErrorCatalog.from_artifacts()
DEFINITIONS = CATALOG.definitions
NOT_OURS = "not one of Infera's errors: the consumer's own, or another contract's"
DEADLINE = keccak(text="InvalidDeadline(uint64,uint64)")[:4] + encode(["uint64", "uint64"], [5, 10])
NAMED = "InvalidDeadline(deadline=5, latestAllowed=10)"
#: An error of Infera's own shape with a `bytes` argument (none of the contracts has one today): a catalog of the
#: real decoder over this ABI and the project's.
CALLBACK_FAILED = {
    "type": "error",
    "name": "CallbackFailed",
    "inputs": [{"name": "code", "type": "uint256"}, {"name": "reason", "type": "bytes"}],
}
WITH_BYTES = ErrorCatalog([("ICallbacks", [CALLBACK_FAILED]), *((name, abi) for name, _, abi in source_abis())])


def error_string(payload: bytes) -> bytes:
    """`revert(string(payload))`: Error(string) whose string is `payload`'s bytes, UTF-8 or not."""
    return ERROR_STRING + encode(["bytes"], [payload])  # a string is encoded as its bytes


def foreign(signature: str, *args: Any) -> bytes:
    """A consumer's own error, `signature` with `args` (`string` arguments given as bytes are encoded as such)."""
    types = [t for t in signature[signature.index("(") + 1 : -1].split(",") if t]
    wire = ["bytes" if t == "string" and isinstance(a, bytes) else t for t, a in zip(types, args, strict=True)]
    return keccak(text=signature)[:4] + encode(wire, list(args))


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (error_string(DEADLINE), f"Error(string) wrapping {NAMED}"),  # not UTF-8: was "arguments do not decode"
        (foreign("Bad(uint256,bytes)", 7, DEADLINE), f"error 0x{{sel}} ({NOT_OURS}), carrying Infera's error {NAMED}"),
        (foreign("Bad(uint256,string)", 7, DEADLINE), f"error 0x{{sel}} ({NOT_OURS}), carrying Infera's error {NAMED}"),
        (foreign("Bad(string,uint256,bytes)", "no", 1, DEADLINE), f"carrying Infera's error {NAMED}"),
        (foreign("Bad(bytes)", error_string(b"plain words")), 'carrying Error(reason="plain words")'),
        (foreign("Bad(bytes)", error_string(DEADLINE)), f"carrying Error(string) wrapping {NAMED}"),
        (
            foreign("Outer(bytes)", foreign("Bad(uint256,bytes)", 1, DEADLINE)),
            f"carrying error 0x{keccak(text='Bad(uint256,bytes)')[:4].hex()}, carrying Infera's error {NAMED}",
        ),
        (error_string(keccak(text="Panic(uint256)")[:4] + encode(["uint256"], [0x11])), "wrapping Panic(0x11: "),
    ],
)
def test_a_wrapped_revert_is_named_with_what_it_carries(data: bytes, says: str) -> None:
    decoded = CATALOG.decode(data)
    assert says.replace("{sel}", data[:4].hex()) in str(decoded)
    assert decoded.inner is not None
    assert decoded.names_something
    assert CoordinatorAbi.from_artifacts().decode_error(data) == decoded  # the node's decoder is this one


def test_an_error_of_inferas_with_a_bytes_argument_shows_the_revert_in_its_place() -> None:
    raw = keccak(text="CallbackFailed(uint256,bytes)")[:4] + encode(["uint256", "bytes"], [3, DEADLINE])
    assert str(WITH_BYTES.decode(raw)) == f"CallbackFailed(code=3, reason={NAMED})"
    raw = keccak(text="CallbackFailed(uint256,bytes)")[:4] + encode(["uint256", "bytes"], [3, b"\x01\x02\x03\x04"])
    assert str(WITH_BYTES.decode(raw)) == "CallbackFailed(code=3, reason=0x01020304)"  # not a revert: as bytes


@pytest.mark.parametrize("definition", DEFINITIONS[::3], ids=lambda d: d.signature)
@settings(max_examples=5, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), outer=st.sampled_from(["Error(string)", "Bad(uint256,bytes)", "Bad(uint256,string)", "own"]))
def test_every_error_is_found_inside_every_wrapping(definition: ErrorDef, data: st.DataObject, outer: str) -> None:
    args = [data.draw(get_abi_strategy(t), label=n) for n, t in definition.params]
    inner = definition.selector + encode(definition.types, args)
    if outer == "Error(string)":
        raw = error_string(inner)
    elif outer == "own":
        raw = keccak(text="CallbackFailed(uint256,bytes)")[:4] + encode(["uint256", "bytes"], [1, inner])
    else:
        raw = foreign(outer, data.draw(st.integers(0, 2**256 - 1)), inner)
    decoded = (WITH_BYTES if outer == "own" else CATALOG).decode(raw)
    assert decoded.inner is not None
    assert decoded.inner.name == definition.name
    assert normal(decoded.inner.args) == normal(args)
    assert str(decoded.inner) in str(decoded)


def test_wrapped_reverts_are_looked_into_only_so_deep() -> None:
    data = DEADLINE
    for _ in range(MAX_WRAP_DEPTH):
        data = foreign("Bad(bytes)", data)
    assert NAMED in str(CATALOG.decode(data))
    too_deep = CATALOG.decode(foreign("Bad(bytes)", data))
    assert too_deep.inner is None
    assert str(too_deep) == f"error 0x{too_deep.selector.hex()} ({NOT_OURS})"


def test_huge_data_is_decoded_but_not_looked_into() -> None:
    padded = foreign("Bad(uint256,bytes)", 1, DEADLINE) + b"\0" * MAX_WRAP_SCAN_BYTES
    assert CATALOG.decode(padded).inner is None
    assert CATALOG.decode(padded[: MAX_WRAP_SCAN_BYTES // 2]).inner is not None


@pytest.mark.parametrize(
    "data",
    [
        error_string(b"\xff\xfe not a revert"),  # not UTF-8, not revert data: as before
        foreign("Bad(uint256,bytes)", 1, b"\xde\xad\xbe\xef\x00"),  # a foreign selector, then bytes too many
        foreign("Bad(uint256,uint256)", 32, 4),  # a word that reads as an offset: the "length" runs past the end
    ],
)
def test_what_carries_no_revert_is_said_as_before(data: bytes) -> None:
    decoded = CATALOG.decode(data)
    assert decoded.inner is None
    if decoded.kind == "error":  # was "do not decode (UnicodeDecodeError…)": the bytes, as they are
        assert str(decoded) == "Error(reason=0x" + b"\xff\xfe not a revert".hex() + ")"
    else:
        assert str(decoded) == f"error 0x{data[:4].hex()} ({NOT_OURS})"


SELECTORS = [d.selector for d in DEFINITIONS[::5]] + [ERROR_STRING, b"\x12\x34\x56\x78"]


@settings(max_examples=300, deadline=None, database=None)
@given(
    prefix=st.lists(st.sampled_from(SELECTORS), max_size=4),
    words=st.lists(st.sampled_from([0, 4, 32, 64, 96, 2**255, 2**256 - 1]), max_size=8),
    tail=st.binary(max_size=200),
)
def test_any_bytes_decode_without_raising(prefix: list[bytes], words: list[int], tail: bytes) -> None:
    """Selectors nested in each other, offsets and lengths that point anywhere, then noise: never an exception."""
    data = b""
    for selector in reversed(prefix):  # each level a `bytes` argument of the one outside it
        data = selector + encode(["uint256", "bytes"], [len(data), data])
    data = data + b"".join(w.to_bytes(32, "big") for w in words) + tail
    decoded = CATALOG.decode(data)
    assert isinstance(str(decoded), str)
    assert isinstance(str(CATALOG.decode(tail)), str)


def test_one_decode_tries_at_most_max_wrap_tries_payloads() -> None:
    """Argument words that all point at payloads that point at more (eight per level): past `MAX_WRAP_TRIES`
    payloads tried, a decode stops looking, so a revert carried after such a tree is not found; before it, it is."""
    leaf = b"\x12\x34\x56\x78" + b"\0" * 64
    tree = leaf
    for _ in range(2):  # 8 payloads of 8 payloads: 72 tries, more than the bound
        tree = b"\x12\x34\x56\x78" + (256).to_bytes(32, "big") * 8 + len(tree).to_bytes(32, "big") + tree
    assert MAX_WRAP_TRIES < 8 + 8 * 8
    after = foreign("Bad(bytes,bytes)", tree, DEADLINE)
    assert CATALOG.decode(after).inner is None
    before = foreign("Bad(bytes,bytes)", DEADLINE, tree)
    assert str(CATALOG.decode(before)).endswith(f"carrying Infera's error {NAMED}")


def test_the_nodes_log_names_a_rethrown_coordinator_error() -> None:
    data = "0x" + error_string(DEADLINE).hex()
    reverted = as_reverted(RpcError("eth_call", 3, "execution reverted", data), CoordinatorAbi.from_artifacts(), "x")
    assert str(reverted) == f"x reverted: Error(string) wrapping {NAMED}"
    assert reverted.error == "Error"  # what the node's rules compare: the outer error, as before


# --------------------------------------------------------------------------------------------- infera decode

RUNNER = CliRunner()
ARGS = "00" * 31 + "05" + "00" * 31 + "0a"


def test_infera_decode_shows_what_a_wrapped_revert_carries() -> None:
    raw = foreign("Bad(uint256,bytes)", 7, DEADLINE)
    result = RUNNER.invoke(app, ["decode", "0x" + raw.hex()])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"error 0x{raw[:4].hex()} ({NOT_OURS}), carrying Infera's error {NAMED}"
    assert "  carries" in lines
    assert f"    {NAMED}" in lines
    answer = json.loads(RUNNER.invoke(app, ["decode", raw.hex(), "--json"]).stdout)
    assert answer["kind"] == "unknown"
    assert answer["inner"]["name"] == "InvalidDeadline"
    assert [a["value"] for a in answer["inner"]["args"]] == ["5", "10"]
    rethrown = RUNNER.invoke(app, ["decode", error_string(DEADLINE).hex()])
    assert rethrown.exit_code == 0, rethrown.output
    assert rethrown.stdout.splitlines()[0] == f"Error(string) wrapping {NAMED}"


@pytest.mark.parametrize(
    ("given", "found"),
    [
        (f'"0x0f0b00b7{ARGS}"', False),  # cast's `data:` field, quoted
        (f"  '0x0f0b00b7{ARGS}'\n", False),
        (f'data: "0x0f0b00b7{ARGS}"', True),  # the whole line
        (f"Error: server returned an error response: execution reverted: custom error 0x0f0b00b7: {ARGS}", True),
        (f"(code: 3, message: execution reverted: custom error 0x0f0b00b7: {ARGS}, data: None)", True),
    ],
)
def test_infera_decode_takes_pasted_tool_output(given: str, found: bool) -> None:
    result = RUNNER.invoke(app, ["decode", given])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == NAMED
    assert (result.stderr.strip() == "decoding 0x0f0b00b7… found in the input") is found
    assert found or result.stderr == ""


def test_infera_decode_reads_stdin_for_a_dash() -> None:
    result = RUNNER.invoke(app, ["decode", "-"], input=f"0x0f0b00b7{ARGS}\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == NAMED


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("from 0x" + "ab" * 20 + " to 0x0f0b00b7", "holds 2 hex values (0xabababab…, 0x0f0b00b7): give the revert"),
        ("reverted with 0x0f0b", "is not hex"),  # too short to be a selector: not a candidate
        ("nonsense", "'nonsense' is not hex: 'n' is not a hex digit"),
    ],
)
def test_infera_decode_asks_for_one_revert_when_the_input_holds_several_or_none(given: str, says: str) -> None:
    result = RUNNER.invoke(app, ["decode", given])
    assert result.exit_code == 2, result.output
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_whole_error_message_decodes_the_value_after_data() -> None:
    message = f'execution reverted to 0x{"5f" * 20}, data: "0x0f0b00b7{ARGS}"'
    result = RUNNER.invoke(app, ["decode", message])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == NAMED


def test_malformed_hex_is_said_once_and_not_searched() -> None:
    result = RUNNER.invoke(app, ["decode", "0x0f0b00b7a"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "infera: 9 hex digits is not a whole number of bytes (one digit missing or extra?)"
    ]


@pytest.mark.parametrize(
    ("reason", "shown"),
    [
        ("\x1b[31mRED\x1b[0m", r'"\x1b[31mRED\x1b[0m"'),
        ("line\nnext\rover", r'"line\nnext\rover"'),
        ("nul\x00 zero\u200bwidth \u202eevil", r'"nul\x00 zero\u200bwidth \u202eevil"'),
        ('say "hi" \\ café 😀', r'"say \"hi\" \\ café 😀"'),
    ],
)
def test_a_revert_string_cannot_write_control_characters_to_the_terminal(reason: str, shown: str) -> None:
    data = ERROR_STRING + encode(["string"], [reason])
    result = RUNNER.invoke(app, ["decode", data.hex()])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"Error(reason={shown})"
    assert all(ch == "\n" or ch.isprintable() for ch in result.stdout)
    assert json.loads(RUNNER.invoke(app, ["decode", data.hex(), "--json"]).stdout)["args"][0]["value"] == reason
