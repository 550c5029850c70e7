"""Names a revert: any custom error of Infera's contracts with its arguments, Solidity's `Error(string)` and
`Panic(uint256)` (with what the panic code means), or says plainly that it is none of those.

One decoder for the node (its logs, job errors and refusals: node/chain/rpc.py `as_reverted`, node/chain/contracts.py),
the operator commands (node/commands/chain_ops.py) and `infera decode`.

Guarantees: selectors, names, argument names and types come from the compiled ABIs of every contract of the
project's sources (node/chain/artifacts.py `source_abis`), never from hand-copied hex; decoding never raises on any
bytes (data too short for its error's arguments comes back with `problem` set); a revert that is not one of Infera's
errors is shown by its selector and said to be so, never silently as raw hex.

Wrapped reverts are looked into: `Error(string)` whose payload is revert data (Solidity's `revert(string(reason))`
rethrow, often not UTF-8), an error of Infera's with a `bytes` or `string` argument holding revert data, and an error
none of Infera's contracts has (a consumer's `error Bad(uint256 code, bytes reason)`) whose arguments have a `bytes`
or `string` holding one, are named with what they carry (`DecodedError.inner`), up to `MAX_WRAP_DEPTH` levels deep;
data over `MAX_WRAP_SCAN_BYTES` or past `MAX_WRAP_TRIES` attempts is not looked into, so huge input costs one decode.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from node.chain.artifacts import canonical_type, signature, source_abis
from node.errors import InferaError

#: What a panic code means (Solidity's `Panic(uint256)`, docs "Panic via assert and Error via require").
PANIC_CODES: dict[int, str] = {
    0x00: "generic compiler-inserted panic",
    0x01: "assert(false)",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "conversion of a value out of range into an enum",
    0x22: "access to an incorrectly encoded storage byte array",
    0x31: "pop() on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory (too large an allocation)",
    0x51: "call to a zero-initialized internal function",
}
ERROR_STRING = keccak(text="Error(string)")[:4]
PANIC = keccak(text="Panic(uint256)")[:4]
#: What `DecodedError.kind` can be.
Kind = Literal["custom", "error", "panic", "unknown", "empty"]
#: How many reverts deep a wrapped revert is looked for, data longer than which is not looked into, and how many
#: candidate payloads one decode tries at most (over every level): bounds on what any input can cost.
MAX_WRAP_DEPTH = 3
MAX_WRAP_SCAN_BYTES = 64 * 1024
MAX_WRAP_TRIES = 32
#: Argument words of an unknown error read as the offset of a `bytes`/`string` argument that may hold a revert.
_MAX_HEAD_WORDS = 8
_NOT_OURS = "not one of Infera's errors: the consumer's own, or another contract's"
#: Revert data quoted in an endpoint's message, for endpoints that give no `data` (anvil writes "execution reverted:
#: custom error 0x<selector>: <arguments in hex>").
_HEX_IN_TEXT = re.compile(r"(?:custom error|reverted:?)\s*(0x[0-9a-fA-F]{8,})(?::\s*([0-9a-fA-F]+)\b)?")
#: A `0x` hex token in text, at least a selector long.
_HEX_TOKEN = re.compile(r"(?<![0-9A-Za-z])0x[0-9a-fA-F]{8,}(?![0-9A-Za-z])")


class RevertDataError(InferaError, ValueError):
    """Text given as revert data is not hex (or not whole bytes); the message says what is wrong with it."""


@dataclass(frozen=True)
class ErrorDef:
    """A custom error: `Name(type name, ...)`, its 4-byte selector, and the contracts whose ABI has it (where it
    is declared first, when the catalog was given the declaring contracts first)."""

    name: str
    signature: str
    selector: bytes
    #: `(name, canonical type)` of each argument ("" for an unnamed one).
    params: tuple[tuple[str, str], ...]
    contracts: tuple[str, ...]

    @property
    def types(self) -> list[str]:
        """The canonical ABI types of the arguments, in order."""
        return [t for _, t in self.params]

    def __str__(self) -> str:
        return f"{self.name}({', '.join(f'{t} {n}'.strip() for n, t in self.params)})"


#: Solidity's own reverts: `require(cond, "reason")` / `revert("reason")`, and the compiler's checks.
BUILTIN_ERRORS: dict[bytes, ErrorDef] = {
    ERROR_STRING: ErrorDef("Error", "Error(string)", ERROR_STRING, (("reason", "string"),), ()),
    PANIC: ErrorDef("Panic", "Panic(uint256)", PANIC, (("code", "uint256"),), ()),
}


@dataclass(frozen=True)
class DecodedError:
    """A decoded revert. `kind`: "custom" (an Infera error), "error" (`Error(string)`), "panic" (`Panic(uint256)`),
    "unknown" (a selector none of Infera's contracts has), "empty" (no data: out of gas, a bare `revert()`, a call
    to an account without code). `name` and `definition` (which error, its arguments' names and types) None for the
    last two. `problem`: why the arguments did not decode (data cut short; `args` empty), or the bytes left over after
    them (`args` decoded), else None."""

    name: str | None
    args: tuple[Any, ...]
    raw: bytes
    kind: Kind = "custom"
    definition: ErrorDef | None = None
    problem: str | None = None
    #: The revert this one carries (a `bytes`/`string` argument holding revert data), named; None when it carries
    #: none that names something.
    inner: DecodedError | None = None
    #: Which argument holds `inner` (its index in `args`); None for an unknown error (its arguments are not known).
    inner_arg: int | None = None

    @property
    def selector(self) -> bytes:
        """The first 4 bytes of the data (fewer when there are fewer)."""
        return self.raw[:4]

    @property
    def fields(self) -> list[tuple[str, str, Any]]:
        """`(name, type, value)` of each decoded argument."""
        params = self.definition.params if self.definition is not None else ()
        return [(n, t, v) for (n, t), v in zip(params, self.args, strict=False)]

    @property
    def complete(self) -> bool:
        """Whether every argument decoded (bytes may be left over: see `problem`)."""
        return self.definition is not None and len(self.args) == len(self.definition.params)

    @property
    def names_something(self) -> bool:
        """Whether this names a revert: an error (Infera's, `Error(string)` or `Panic`) whose arguments decoded with no
        byte left over, or any revert that carries one."""
        if self.inner is not None:
            return True
        return self.kind in ("custom", "error", "panic") and self.complete and self.problem is None

    @property
    def panic_meaning(self) -> str | None:
        """What a `Panic(uint256)`'s code means (None for any other revert)."""
        if self.kind != "panic" or not self.args:
            return None
        code = int(self.args[0])
        return PANIC_CODES.get(code, f"panic code 0x{code:02x}, not one Solidity defines")

    def __str__(self) -> str:
        if self.kind == "empty":
            return "a revert without data (out of gas, a bare revert(), or a call to an account without code)"
        if self.kind == "unknown":
            if len(self.raw) < 4:
                return f"revert data 0x{self.raw.hex()}, shorter than an error's 4-byte selector"
            carried = "" if self.inner is None else f", carrying {_carried(self.inner)}"
            return f"error 0x{self.raw[:4].hex()} ({_NOT_OURS}){carried}"
        if self.kind == "error" and self.inner is not None:
            return f"Error(string) wrapping {self.inner}"
        if not self.complete:
            return f"{self.name}(?) whose arguments do not decode: {self.problem}"
        if self.kind == "panic" and self.args:
            return f"Panic(0x{int(self.args[0]):02x}: {self.panic_meaning})"
        values = [
            str(self.inner) if i == self.inner_arg else format_value(v) for i, (_, _, v) in enumerate(self.fields)
        ]
        shown = ", ".join(f"{n}={v}" if n else v for (n, _, _), v in zip(self.fields, values, strict=True))
        return f"{self.name}({shown})" + (f" with {self.problem}" if self.problem is not None else "")


class ErrorCatalog:
    """Every custom error of a set of ABIs, by selector; decodes revert data with them."""

    def __init__(self, abis: Iterable[tuple[str, Sequence[dict[str, Any]]]]) -> None:
        """`abis`: `(contract name, ABI entries)` pairs, declaring contracts (interfaces, libraries) first: an error
        several contracts share (same signature) is one entry naming them all in that order, its argument names
        those of the first."""
        names: dict[str, dict[str, Any]] = {}
        holders: dict[str, list[str]] = {}
        for contract, abi in abis:
            for entry in abi:
                if entry.get("type") != "error":
                    continue
                sig = signature(entry)
                names.setdefault(sig, entry)
                if contract and contract not in holders.setdefault(sig, []):
                    holders[sig].append(contract)
        self._by_selector: dict[bytes, list[ErrorDef]] = {}
        for sig, entry in names.items():
            definition = ErrorDef(
                name=entry["name"],
                signature=sig,
                selector=keccak(text=sig)[:4],
                params=tuple((p.get("name", ""), canonical_type(p)) for p in entry.get("inputs", [])),
                contracts=tuple(holders.get(sig, [])),
            )
            self._by_selector.setdefault(definition.selector, []).append(definition)

    @classmethod
    def from_artifacts(cls, artifacts_dir: Path | None = None) -> ErrorCatalog:
        """The errors of every contract of the project's sources in the forge build (node/chain/artifacts.py);
        raises `ConfigError` when there is no build there."""
        # A base declares fewer errors than what inherits it (IEscrow's five are in ICoordinator's forty): first.
        ranked = sorted(
            source_abis(artifacts_dir),
            key=lambda c: (_declaring_rank(c[1]), sum(e.get("type") == "error" for e in c[2]), c[0]),
        )
        return cls((name, abi) for name, _, abi in ranked)

    @property
    def definitions(self) -> list[ErrorDef]:
        """Every error, by name then signature."""
        return sorted((d for defs in self._by_selector.values() for d in defs), key=lambda d: (d.name, d.signature))

    def lookup(self, selector: bytes) -> ErrorDef | None:
        """The error with this 4-byte selector, or None."""
        defs = self._by_selector.get(bytes(selector[:4]))
        return defs[0] if defs and len(selector) >= 4 else None

    def name_of(self, selector: bytes) -> str:
        """The error's name for a bare selector (what `DeliverySkipped` carries), or the selector said to be none of
        Infera's errors."""
        definition = self.lookup(selector) or BUILTIN_ERRORS.get(bytes(selector[:4]))
        if definition is not None:
            return definition.name
        return f"0x{bytes(selector[:4]).hex()} ({_NOT_OURS})"

    def decode(self, data: bytes) -> DecodedError:
        """Names revert `data` (selector + ABI-encoded arguments, or a bare selector: then no arguments), and the
        revert it wraps, if any (`DecodedError.inner`). Never raises: data cut short comes back with its error's name
        and `problem`."""
        return self._decode(bytes(data), 0, [MAX_WRAP_TRIES if len(data) <= MAX_WRAP_SCAN_BYTES else 0])

    def _decode(self, data: bytes, depth: int, tries: list[int]) -> DecodedError:
        """`decode` at `depth` wraps deep; `tries`: how many candidate payloads may still be tried (shared)."""
        if len(data) < 4:
            return DecodedError(None, (), data, "empty" if not data else "unknown")
        selector, body = data[:4], data[4:]
        builtin = BUILTIN_ERRORS.get(selector)
        defs = [builtin] if builtin is not None else self._by_selector.get(selector, [])
        if not defs:
            inner = self._wrapped(_head_payloads(body), depth, tries)
            return DecodedError(None, (), data, "unknown", inner=inner[1] if inner else None)
        kind: Kind = "error" if selector == ERROR_STRING else "panic" if selector == PANIC else "custom"
        if not body and defs[0].params:
            return DecodedError(defs[0].name, (), data, kind, defs[0], "no arguments given (a bare selector)")
        problem = "?"
        for candidate in defs:  # two signatures with one selector (a collision) decode by whichever fits
            try:
                args = tuple(abi_decode(candidate.types, body))
            except Exception as exc:  # eth-abi's errors for data that does not fit the types
                problem = f"{type(exc).__name__}: {exc}"
                # A `string` that is not UTF-8 may be revert bytes (`revert(string(reason))`): read it as `bytes`
                # (shown as hex when it holds no revert).
                found = self._as_bytes(candidate, body, depth, tries)
                if found is None:
                    continue
                args, inner = found
                if inner is None:
                    return DecodedError(candidate.name, args, data, kind, candidate)
                return DecodedError(candidate.name, args, data, kind, candidate, inner=inner[1], inner_arg=inner[0])
            extra = len(body) - len(abi_encode(candidate.types, list(args)))
            if extra > 0:  # eth-abi reads what it needs and ignores the rest: a copy with bytes too many
                problem = f"{extra} byte(s) after its arguments"
                return DecodedError(candidate.name, args, data, kind, candidate, problem)
            inner = self._wrapped(_arg_payloads(candidate, args), depth, tries)
            if inner is None:
                return DecodedError(candidate.name, args, data, kind, candidate)
            return DecodedError(candidate.name, args, data, kind, candidate, inner=inner[1], inner_arg=inner[0])
        return DecodedError(defs[0].name, (), data, kind, defs[0], problem)

    def _as_bytes(
        self, definition: ErrorDef, body: bytes, depth: int, tries: list[int]
    ) -> tuple[tuple[Any, ...], tuple[int | None, DecodedError] | None] | None:
        """The arguments of an error whose `string` arguments did not decode (not UTF-8), read as `bytes`, and the
        revert one of them holds (None when none does); None when they do not decode so either."""
        types = [_STRING.sub("bytes", t) for t in definition.types]
        if types == definition.types:
            return None
        try:
            args = tuple(abi_decode(types, body))
        except Exception:  # eth-abi's errors: not this either
            return None
        if len(body) != len(abi_encode(types, list(args))):
            return None
        inner = self._wrapped(
            ((i, a) for i, (t, a) in enumerate(zip(types, args, strict=True)) if t == "bytes"), depth, tries
        )
        return args, inner

    def _wrapped(
        self, payloads: Iterable[tuple[int | None, bytes]], depth: int, tries: list[int]
    ) -> tuple[int | None, DecodedError] | None:
        """The first of `payloads` (`(argument index, bytes)`) that is a revert naming something, decoded one level
        deeper, with its index; None when none is (or the depth or the tries are spent)."""
        if depth >= MAX_WRAP_DEPTH:
            return None
        for index, payload in payloads:
            if tries[0] <= 0:
                return None
            if len(payload) < 4:
                continue
            tries[0] -= 1
            inner = self._decode(payload, depth + 1, tries)
            if inner.names_something:
                return index, inner
        return None


#: `string` as a whole word of an ABI type (`string`, `string[]`, inside a tuple).
_STRING = re.compile(r"\bstring\b")


def _arg_payloads(definition: ErrorDef, args: Sequence[Any]) -> Iterable[tuple[int | None, bytes]]:
    """The top-level `bytes` and `string` arguments of a decoded error, as bytes, with their index."""
    for index, (kind, value) in enumerate(zip(definition.types, args, strict=True)):
        if kind == "bytes" and isinstance(value, bytes):
            yield index, value
        elif kind == "string" and isinstance(value, str):
            yield index, value.encode("utf-8", "surrogateescape")


def _head_payloads(body: bytes) -> Iterable[tuple[int | None, bytes]]:
    """What the arguments of an error of unknown types may hold in a `bytes` or `string` argument: each of the first
    `_MAX_HEAD_WORDS` words read as the offset of one (a 32-byte length, then that many bytes, all inside `body`)."""
    for word in range(min(len(body) // 32, _MAX_HEAD_WORDS)):
        offset = int.from_bytes(body[word * 32 : word * 32 + 32], "big")
        if offset % 32 or offset + 32 > len(body):
            continue
        length = int.from_bytes(body[offset : offset + 32], "big")
        if 4 <= length <= len(body) - offset - 32:
            yield None, body[offset + 32 : offset + 32 + length]


def _carried(inner: DecodedError) -> str:
    """How an unknown error's wrapped revert is said (an unknown one it wraps in turn, briefly)."""
    if inner.kind == "unknown" and inner.inner is not None:
        return f"error 0x{inner.selector.hex()}, carrying {_carried(inner.inner)}"
    return f"Infera's error {inner}" if inner.kind == "custom" else str(inner)


def parse_hex(text: str) -> bytes:
    """Bytes from hex text, with or without `0x`; raises `RevertDataError` saying what is wrong."""
    digits = text.strip()
    digits = digits[2:] if digits[:2].lower() == "0x" else digits
    bad = next((c for c in digits if c not in "0123456789abcdefABCDEF"), None)
    if bad is not None:
        raise RevertDataError(f"{text.strip()[:80]!r} is not hex: {bad!r} is not a hex digit")
    if len(digits) % 2:
        raise RevertDataError(f"{len(digits)} hex digits is not a whole number of bytes (one digit missing or extra?)")
    return bytes.fromhex(digits)


def hex_in_text(text: str) -> list[str]:
    """The revert data pasted tool output quotes, as hex with `0x`: anvil's "custom error 0x<selector>: <arguments
    in hex>" as one, else every distinct `0x` token of at least 8 hex digits (cast's `data: "0x…"`), in order."""
    found = _HEX_IN_TEXT.search(text)
    if found is not None and found.group(2):
        return [found.group(1) + found.group(2)]
    return list(dict.fromkeys(_HEX_TOKEN.findall(text)))


def revert_data(exc: BaseException) -> bytes | None:
    """The revert data an RPC's error carries (web3's `ContractLogicError`, a raw call's `RpcError`): its `data`
    (hex text, bytes, or an object holding `data`), else the hex its message quotes as the revert ("custom error
    0x…": some endpoints put it only there); None when it carries none."""
    data: Any = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return parse_hex(data)
        except RevertDataError:
            return None
    found = _HEX_IN_TEXT.search(str(getattr(exc, "message", None) or exc))
    quoted = found.group(1)[2:] + (found.group(2) or "") if found else ""
    return bytes.fromhex(quoted) if found and len(quoted) % 2 == 0 else None


def escape_text(text: str) -> str:
    """`text` safe to print on a terminal or in a log line: backslashes and quotes escaped, and every character
    that is not printable (control characters such as ESC, CR, LF, NUL; format characters such as zero-width
    spaces and direction marks) written as its Python escape (`\\x1b`, `\\n`, `\\u200b`), so a contract's
    revert string can neither colour, move nor hide what is shown around it."""
    out = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def format_value(value: Any) -> str:
    """An argument as a person reads it: addresses checksummed, bytes as 0x-hex, strings quoted, arrays and
    structs in brackets."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, str):
        if re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
            return str(to_checksum_address(value))
        return '"' + escape_text(value) + '"'
    if isinstance(value, list | tuple):
        inner = ", ".join(format_value(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    return str(value)


def json_value(value: Any) -> Any:
    """An argument as JSON: integers as decimal strings (uint256 does not fit a JSON number), addresses
    checksummed, bytes as 0x-hex; arrays and structs as lists."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
        return str(to_checksum_address(value))
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value


def _declaring_rank(source: str) -> int:
    """Where the project declares its errors: interfaces first, then the consumer bases and libraries, then the
    contracts that inherit them."""
    for rank, folder in enumerate(("src/interfaces/", "src/consumer/", "src/lib/")):
        if source.startswith(folder):
            return rank
    return 3
