"""The forge build artifacts (`coordinator_contract/out`): one contract's ABI and bytecode, the contracts of the
project's own sources, and the canonical signatures of ABI entries.

It imports no other module of the node (a leaf), so the ABI users (node/chain/contracts.py, node/chain/reverts.py)
share it without importing each other. Where the artifacts are: `chain.artifacts_dir` of the node's config (env
`INFERA_CHAIN__ARTIFACTS_DIR`; the node's image sets it to the `out` folder it ships), else the repository's
`coordinator_contract/out` beside this package (a checkout after `make build`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import ConfigError

DEFAULT_ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "coordinator_contract" / "out"
#: Where the project's contracts live in the forge project: artifacts compiled from elsewhere (tests, scripts) are
#: test actors, not Infera's contracts.
SOURCE_PREFIX = "src/"


@dataclass(frozen=True)
class Artifact:
    """A compiled contract: its ABI and creation bytecode."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes


def load_artifact(name: str, artifacts_dir: Path | None = None) -> Artifact:
    """Loads `<out>/<name>.sol/<name>.json` as written by `forge build`; raises `ConfigError` when it is missing."""
    out = artifacts_dir or DEFAULT_ARTIFACTS_DIR
    path = out / f"{name}.sol" / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"chain.artifacts_dir: {path} not found; run `make build` (forge build) first") from None
    code = data.get("bytecode", {}).get("object", "0x")
    return Artifact(name=name, abi=data["abi"], bytecode=bytes.fromhex(code.removeprefix("0x")))


@functools.lru_cache(maxsize=8)
def source_abis(artifacts_dir: Path | None = None) -> tuple[tuple[str, str, tuple[dict[str, Any], ...]], ...]:
    """`(contract, source path, ABI entries)` of every contract compiled from the project's own sources (`src/`:
    the Coordinator and its modules, the registry, the manager, the verifiers, the consumer bases and libraries,
    the examples, the interfaces), by source path then name. An artifact without metadata (another build tool)
    counts as the project's. Read once per folder (cached). Raises `ConfigError` when the folder holds no
    artifact."""
    out = artifacts_dir or DEFAULT_ARTIFACTS_DIR
    found: list[tuple[str, str, tuple[dict[str, Any], ...]]] = []
    for path in sorted(out.glob("*.sol/*.json")):
        if path.parent.name.endswith((".t.sol", ".s.sol")):  # forge tests and scripts: never the project's
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # half-written or foreign: not an artifact
        if not isinstance(data, dict) or not isinstance(data.get("abi"), list):
            continue
        targets = (data.get("metadata") or {}).get("settings", {}).get("compilationTarget") or {}
        source = next(iter(targets), f"{SOURCE_PREFIX}{path.parent.name}")
        if source.startswith(SOURCE_PREFIX):
            found.append((path.stem, source, tuple(data["abi"])))
    if not found:
        raise ConfigError(f"chain.artifacts_dir: no contract artifacts in {out}; run `make build` (forge build) first")
    return tuple(sorted(found, key=lambda c: (c[1], c[0])))


def canonical_type(param: dict[str, Any]) -> str:
    """The canonical ABI type of an ABI parameter: `uint256`, `(address,bytes32)[]` for a struct array."""
    kind: str = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param["components"])
        return f"({inner}){kind[5:]}"
    return kind


def signature(entry: dict[str, Any]) -> str:
    """`name(type,...)` of an ABI function, event or error."""
    return f"{entry['name']}({','.join(canonical_type(p) for p in entry.get('inputs', []))})"
