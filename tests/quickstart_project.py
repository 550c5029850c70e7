"""The quick-start Foundry project as a dApp developer gets it: the contracts packed with `npm pack`, installed
offline into a fresh copy of `coordinator_contract/quickstart/`. Shared by the integration and e2e tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from node.devnet import CONTRACTS_DIR, ROOT

QUICKSTART = CONTRACTS_DIR / "quickstart"
#: The registry's `solc` is stood in for by the repository's own (the same pinned version): nothing is downloaded.
ROOT_SOLC = ROOT / "node_modules" / "solc"


def tarball_name() -> str:
    """`infera-contracts-<version>.tgz`, as `npm pack` names the package (from coordinator_contract/package.json)."""
    manifest = json.loads((CONTRACTS_DIR / "package.json").read_text())
    return f"{manifest['name'].lstrip('@').replace('/', '-')}-{manifest['version']}.tgz"


def run(argv: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs `argv` in `cwd` (4 minutes at most); raises AssertionError with its output when `check` and it fails."""
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=240)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def pack(dest: Path) -> Path:
    """`npm pack` of coordinator_contract/ into `dest` (the prepack script exports the ABIs from `out/`, so build
    first); returns the tarball."""
    run(["npm", "pack", "--pack-destination", str(dest)], cwd=CONTRACTS_DIR)
    (packed,) = dest.glob("infera-contracts-*.tgz")
    return packed


def fresh_project(parent: Path, name: str) -> Path:
    """A copy of the quick start as it is in git (no node_modules, build output or lock file of a local run), with
    no dependencies in its package.json yet, as `npm init -y` leaves it (its own names the checkout's tarball by a
    path relative to the checkout)."""
    project = parent / name
    shutil.copytree(
        QUICKSTART,
        project,
        ignore=shutil.ignore_patterns("node_modules", "out", "cache", "*.lock", "package-lock.json"),
    )
    manifest = json.loads((project / "package.json").read_text())
    manifest["devDependencies"] = {}
    (project / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return project


def install(project: Path, *packages: str) -> None:
    """`npm install --offline --save-dev packages` in `project`."""
    run(["npm", "install", "--offline", "--no-audit", "--no-fund", "--save-dev", *packages], cwd=project)


def ready_project(parent: Path, tarball: Path) -> Path:
    """A fresh quick-start copy with the package and the compiler installed, built by forge."""
    project = fresh_project(parent, "my-dapp")
    install(project, str(tarball), str(ROOT_SOLC))
    return project
