"""`infera decode <hex>`: names a revert's data — any custom error of Infera's contracts with its arguments' names,
types and values, `Error(string)`, or `Panic(uint256)` with what its code means.

Works offline: the errors come from the forge artifacts (`--artifacts-dir`, env `INFERA_CHAIN__ARTIFACTS_DIR` as the
node reads it, else the checkout's `coordinator_contract/out`). Takes the whole revert data (selector and
arguments) or a bare 4-byte selector (then names the error and its signature), with or without `0x`, from stdin when
the argument is `-`; blanks inside and quotes around are ignored (wrapped copies, cast's `"0x…"`). Pasted tool output
that is not hex but holds one revert (anvil's `custom error 0x…: <arguments>`, one `0x` token of 8 hex digits or more)
decodes that, said on stderr; several candidates are listed for the user to pick one. A wrapped revert (`Error(string)`
or another contract's error carrying revert bytes, node/chain/reverts.py) is named with what it carries. Exit 0 when
named (or what it carries is); 1 when the selector is none of Infera's errors and carries none, or its arguments do
not decode; 2 when the text is not hex or there are no artifacts.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from node.commands.console import fail

if TYPE_CHECKING:
    from node.chain.reverts import DecodedError


def decode(
    data: str = typer.Argument(
        ..., help="revert data or a 4-byte error selector, hex (0x optional); - reads it from stdin"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of text"),
    artifacts_dir: Path | None = typer.Option(
        None,
        "--artifacts-dir",
        envvar="INFERA_CHAIN__ARTIFACTS_DIR",
        help="forge artifacts (default coordinator_contract/out)",
    ),
) -> None:
    """Name a revert: an Infera contract's custom error and its arguments, Error(string) or Panic(uint256)."""
    from node.chain.reverts import ErrorCatalog, RevertDataError
    from node.errors import ConfigError

    try:
        raw = read_input(sys.stdin.read() if data == "-" else data)
    except RevertDataError as exc:
        fail(str(exc), code=2)
        return
    if not raw:
        fail("no data to decode: a revert without data (out of gas, a bare revert(), no code at the address)", 2)
    if len(raw) < 4:
        fail(f"0x{raw.hex()} is shorter than an error's 4-byte selector", code=2)
    try:
        catalog = ErrorCatalog.from_artifacts(artifacts_dir)
    except ConfigError as exc:
        fail(str(exc), code=2)
        return
    decoded = catalog.decode(raw)
    bare = len(raw) == 4
    if as_json:
        typer.echo(json.dumps(describe(decoded, bare=bare), indent=2))
    elif decoded.definition is not None and (decoded.complete or bare):
        typer.echo(text(decoded, bare=bare))
    elif decoded.kind == "unknown" and decoded.inner is not None:
        typer.echo(text(decoded, bare=False))
    if decoded.kind == "unknown" and decoded.inner is None:
        fail(
            f"0x{raw[:4].hex()} is not one of Infera's errors (none of the {len(catalog.definitions)} custom errors of"
            " its contracts, nor Error(string) or Panic(uint256)): the consumer's own error, or another contract's;"
            " decode it with that contract's ABI, e.g. `cast decode-error --sig 'Name(types)' <data>`",
            code=1,
        )
    if decoded.problem is not None and not bare:
        if decoded.complete:
            fail(f"the data has {decoded.problem} ({decoded.definition}): is it one revert, copied exactly?", code=1)
        fail(
            f"{decoded.definition} (0x{raw[:4].hex()}), but its arguments do not decode ({decoded.problem}):"
            " is the data cut short?",
            code=1,
        )


def read_input(given: str) -> bytes:
    """The revert data in what the user gave: hex (blanks inside, quotes and blanks around ignored), else the one
    revert that pasted tool output quotes (said on stderr); raises `RevertDataError` when it is neither, or when
    the text holds several candidates (naming them)."""
    from node.chain.reverts import RevertDataError, hex_in_text, parse_hex

    bare = "".join(given.strip().strip("\"'`").split())
    try:
        return parse_hex(bare)
    except RevertDataError as not_hex:
        found = hex_in_text(given)
        if not found or re.fullmatch(r"(0[xX])?[0-9a-fA-F]*", bare):  # hex already, just malformed: say why
            raise not_hex from None
        labelled = re.search(r"\bdata:\s*[\"']?(0x[0-9a-fA-F]+)", given)  # cast's `data: "0x…"` is the revert
        if len(found) > 1 and labelled:
            found = [labelled.group(1)]
        if len(found) > 1:
            shown = ", ".join(_short(h) for h in found[:5]) + (", …" if len(found) > 5 else "")
            raise RevertDataError(
                f"the input is not hex and holds {len(found)} hex values ({shown}): give the revert data alone"
            ) from None
        typer.echo(f"decoding {_short(found[0])} found in the input", err=True)
        return parse_hex(found[0])


def _short(hex_text: str) -> str:
    """Hex cut to a selector and an ellipsis when longer."""
    return hex_text if len(hex_text) <= 10 else hex_text[:10] + "…"


def text(decoded: DecodedError, *, bare: bool) -> str:
    """What `infera decode` prints for a named revert: the error with its arguments (for a bare selector, its
    declaration), then its selector, canonical signature (what `cast decode-error --sig` takes), the contracts that
    have it (the declaring one first), and each argument with its type."""
    from node.chain.reverts import format_value

    definition = decoded.definition
    if definition is None:  # an error of another contract carrying one it names
        lines = [str(decoded), f"  {'selector':<9}  0x{decoded.selector.hex()}"]
        return "\n".join([*lines, *_carries(decoded)])
    width = max([9, *(len(name) for name, _, _ in decoded.fields)])
    lines = [str(definition) if bare else str(decoded)]
    lines.append(f"  {'selector':<{width}}  0x{decoded.selector.hex()}")
    lines.append(f"  {'signature':<{width}}  {definition.signature}")
    if definition.contracts:
        lines.append(f"  {'contracts':<{width}}  {', '.join(definition.contracts)}")
    if decoded.kind == "panic" and decoded.args:
        lines.append(f"  {'meaning':<{width}}  {decoded.panic_meaning}")
    for name, kind, value in decoded.fields:
        shown = f"0x{value:02x}" if decoded.kind == "panic" else format_value(value)
        lines.append(f"  {name or '_':<{width}}  {shown}  ({kind})")
    return "\n".join([*lines, *_carries(decoded)])


def _carries(decoded: DecodedError) -> list[str]:
    """The lines of the revert `decoded` wraps, indented under "carries"."""
    if decoded.inner is None:
        return []
    return ["  carries", *("    " + line for line in text(decoded.inner, bare=False).splitlines())]


def describe(decoded: DecodedError, *, bare: bool) -> dict[str, Any]:
    """`infera decode --json`'s object for a `DecodedError`: kind, selector, name, signature, contracts, the
    arguments (`name`, `type`, `value`: integers as decimal strings), the panic's meaning, and what went wrong."""
    from node.chain.reverts import json_value

    definition = decoded.definition
    out: dict[str, Any] = {
        "data": "0x" + decoded.raw.hex(),
        "selector": "0x" + decoded.selector.hex(),
        "kind": decoded.kind,
        "name": decoded.name,
        "signature": definition.signature if definition else None,
        "contracts": list(definition.contracts) if definition else [],
        "args": [{"name": n, "type": t, "value": json_value(v)} for n, t, v in decoded.fields],
        "text": None if decoded.kind == "unknown" and decoded.inner is None else str(decoded),
        "inner": None if decoded.inner is None else describe(decoded.inner, bare=False),
    }
    if decoded.kind == "panic":
        out["meaning"] = decoded.panic_meaning
    if decoded.problem is not None and not bare:
        out["problem"] = decoded.problem
    return out
