"""The error tables of coordinator_contract/README.md cannot drift from the contracts: every row's selector is the
compiled ABI's for an error of that name and arity, and every custom error of every contract of `src/` has a row."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from node.chain.reverts import ErrorCatalog
from node.devnet import ROOT

pytestmark = pytest.mark.usefixtures("contracts_built")

README = ROOT / "coordinator_contract" / "README.md"
#: `Name(arg, arg)` or `Contract.Name(arg)` in backticks, at the start of a table's first cell (or after a comma).
_ERROR = re.compile(r"`(?:(\w+)\.)?(\w+)\(([^)`]*)\)`")
_SELECTOR = re.compile(r"^`(0x[0-9a-f]{8})`$")


@dataclass(frozen=True)
class Row:
    line: int
    names: tuple[tuple[str | None, str, int], ...]  # (contract or None, error name, arity) of each error in the cell
    selector: str | None  # the selector cell's 0x-hex, None when it is not one


def error_rows(text: str) -> list[Row]:
    """Every row of every table whose header names an `error` column and a `selector` column."""
    rows: list[Row] = []
    columns: list[str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            columns = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if columns is None:
            columns = [c.lower() for c in cells]
            continue
        if "error" not in columns or "selector" not in columns or set(line) <= set("|-: "):
            continue
        first, selector = cells[columns.index("error")], cells[columns.index("selector")]
        found = [(m[0] or None, m[1], len([a for a in m[2].split(",") if a.strip()])) for m in _ERROR.findall(first)]
        if not found:
            assert first.startswith("**"), f"README.md:{number}: a row of an error table names no error: {first!r}"
            continue
        match = _SELECTOR.match(selector)
        rows.append(Row(number, tuple(found), match.group(1) if match else None))
    return rows


@pytest.fixture(scope="module")
def catalog() -> ErrorCatalog:
    return ErrorCatalog.from_artifacts()


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    found = error_rows(README.read_text())
    assert len(found) >= 90, "the README's error tables were not found (or lost their selector column)"
    return found


def test_every_row_has_the_selector_the_abi_gives_its_error(catalog: ErrorCatalog, rows: list[Row]) -> None:
    for row in rows:
        assert row.selector is not None, f"README.md:{row.line}: no selector (`0x` and 8 hex digits in backticks)"
        definition = catalog.lookup(bytes.fromhex(row.selector[2:]))
        assert definition is not None, f"README.md:{row.line}: {row.selector} is no error of the contracts"
        for contract, name, arity in row.names:
            assert (name, arity) == (definition.name, len(definition.params)), (
                f"README.md:{row.line}: {row.selector} is {definition}, not {name} with {arity} argument(s)"
            )
            assert contract is None or contract in definition.contracts, (
                f"README.md:{row.line}: {contract} has no {definition.signature}"
            )


def test_every_custom_error_of_the_contracts_has_a_row(catalog: ErrorCatalog, rows: list[Row]) -> None:
    documented = {row.selector for row in rows}
    missing = [
        f"{d} 0x{d.selector.hex()} ({', '.join(d.contracts)})"
        for d in catalog.definitions
        if f"0x{d.selector.hex()}" not in documented
    ]
    assert not missing, "errors without a row in coordinator_contract/README.md:\n" + "\n".join(missing)


def test_the_parser_reads_what_it_must() -> None:
    """A guard on the guard: a table row without its selector, or with another error's, is caught."""
    table = (
        "| error | selector | thrown when |\n|---|---|---|\n| **Group** | | |\n"
        "| `InvalidAmount()` | `0x2c5211c6` | x |\n| `X.Foo(a, b)`, `X.Foo(a, b)` | 0x1 | y |\n\ntext\n"
        "| error | thrown by |\n|---|---|\n| `Bar()` | z |\n"
    )
    assert error_rows(table) == [
        Row(4, ((None, "InvalidAmount", 0),), "0x2c5211c6"),
        Row(5, (("X", "Foo", 2), ("X", "Foo", 2)), None),
    ]
