"""`infera decode <hex>`: names a revert's data — any custom error of Infera's contracts with its arguments' names,
types and values, `Error(string)`, or `Panic(uint256)` with what its code means.

Works offline: the errors come from the forge artifacts (`--artifacts-dir`, env `INFERA_CHAIN__ARTIFACTS_DIR` as the
node reads it, else the checkout's `coordinator_contract/out`). Takes the whole revert data (selector and
arguments) or a bare 4-byte selector (then names the error and its signature), with or without `0x`; blanks inside
are ignored (wrapped copies). Exit 0 when named; 1 when the selector is none of Infera's errors or its arguments do
not decode; 2 when the text is not hex or there are no artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from node.commands.console import fail

if TYPE_CHECKING:
    from node.chain.reverts import DecodedError


def decode(
    data: str = typer.Argument(..., help="revert data or a 4-byte error selector, hex (0x optional)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of text"),
    artifacts_dir: Path | None = typer.Option(
        None,
        "--artifacts-dir",
        envvar="INFERA_CHAIN__ARTIFACTS_DIR",
        help="forge artifacts (default coordinator_contract/out)",
    ),
) -> None:
    """Name a revert: an Infera contract's custom error and its arguments, Error(string) or Panic(uint256)."""
    from node.chain.reverts import ErrorCatalog, RevertDataError, parse_hex
    from node.errors import ConfigError

    try:
        raw = parse_hex("".join(data.split()))
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
    if decoded.kind == "unknown":
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


def text(decoded: DecodedError, *, bare: bool) -> str:
    """What `infera decode` prints for a named revert: the error with its arguments (for a bare selector, its
    declaration), then its selector, canonical signature (what `cast decode-error --sig` takes), the contracts that
    have it (the declaring one first), and each argument with its type."""
    from node.chain.reverts import format_value

    definition = decoded.definition
    assert definition is not None  # only named reverts are shown
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
    return "\n".join(lines)


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
        "text": None if decoded.kind == "unknown" else str(decoded),
    }
    if decoded.kind == "panic":
        out["meaning"] = decoded.panic_meaning
    if decoded.problem is not None and not bare:
        out["problem"] = decoded.problem
    return out
