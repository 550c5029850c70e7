"""The Solidity package and the quick start, as a dApp developer meets them: `npm pack` the contracts, install the
tarball into a fresh copy of `coordinator_contract/quickstart/` (a Foundry project of its own), and build and test it
with forge, offline. The README's quick start quotes those files, so it cannot drift from what works."""

from __future__ import annotations

import json
import re
import tarfile
import textwrap
from pathlib import Path

import pytest

from node.devnet import CONTRACTS_DIR, ROOT, tool
from tests.quickstart_project import QUICKSTART, ROOT_SOLC, fresh_project, install, pack, run, tarball_name


@pytest.fixture(scope="module")
def tarball(contracts_built: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`npm pack` of coordinator_contract/ (its prepack script exports the ABIs from the fresh build)."""
    return pack(tmp_path_factory.mktemp("pack"))


def test_package_ships_sources_abis_test_kit_and_compiler_wrapper(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = {n.removeprefix("package/") for n in tar.getnames()}
        manifest = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
        coordinator_abi = json.load(tar.extractfile("package/abi/Coordinator.json"))  # type: ignore[arg-type]
    assert manifest["name"] == "@infera/contracts"
    for needed in (
        "src/consumer/InferenceConsumer.sol",
        "src/interfaces/ICoordinator.sol",
        "src/examples/SentimentConsumer.sol",
        "testing/InferaTest.sol",
        "testing/Test.sol",
        "bin/solc",
        "bin/solc.js",
        "abi/NodeRegistry.json",
        "abi/InferenceConsumer.json",
        "README.md",
    ):
        assert needed in names, f"{needed} missing from the package"
    assert not [n for n in names if n.startswith(("test/", "out/", "cache/", "quickstart/"))], sorted(names)
    # The consensus functions live in the ConsensusModule but are called at the Coordinator's address.
    functions = {item["name"] for item in coordinator_abi if item["type"] == "function"}
    assert {"requestInference", "deliver", "requestConsensusInference", "reveal"} <= functions


def test_quickstart_builds_and_its_forge_tests_pass_from_a_fresh_copy(tarball: Path, tmp_path: Path) -> None:
    manifest = json.loads((QUICKSTART / "package.json").read_text())
    assert set(manifest["devDependencies"]) == {"@infera/contracts", "solc"}, "the README installs exactly these"
    assert manifest["devDependencies"]["@infera/contracts"] == f"file:../{tarball_name()}", "make package's tarball"
    assert tarball.name == tarball_name()
    project = fresh_project(tmp_path, "my-dapp")
    install(project, str(tarball), str(ROOT_SOLC))
    result = run([tool("forge"), "test", "-vv"], cwd=project)
    out = result.stdout
    passed = re.findall(r"\[PASS\] (\w+)\(", out)
    assert "testCallbackFitsItsGasLimit" in passed, out
    assert len(passed) >= 8, out
    assert "FAIL" not in out, out
    gas = int(re.search(r"EmbeddingStore callback gas: (\d+)", out).group(1))  # type: ignore[union-attr]
    # 384 non-zero bytes are 12 new storage slots, plus the length and the scale: above 14 * 20,000.
    assert 14 * 20_000 < gas < 400_000


def test_missing_solc_names_the_package_to_install(tarball: Path, tmp_path: Path) -> None:
    project = fresh_project(tmp_path, "no-compiler")
    install(project, str(tarball))  # solc is an optional peer: npm does not add it
    result = run([tool("forge"), "build"], cwd=project, check=False)
    assert result.returncode != 0
    assert "npm install --save-dev solc@0.8.37" in result.stdout + result.stderr


def _fenced(markdown: str, after: str, lang: str) -> str:
    """The first ```lang block after the line containing `after`."""
    start = markdown.index(after)
    match = re.search(rf"```{lang}\n(.*?)```", markdown[start:], re.S)
    assert match, f"no {lang} block after {after!r}"
    return match.group(1)


def test_readme_quick_start_quotes_the_tested_project() -> None:
    readme = (CONTRACTS_DIR / "README.md").read_text()
    assert _fenced(readme, "<!-- quickstart: foundry.toml -->", "toml") == (QUICKSTART / "foundry.toml").read_text()
    contract = (QUICKSTART / "src" / "EmbeddingStore.sol").read_text()
    assert _fenced(readme, "<!-- quickstart: src/EmbeddingStore.sol -->", "solidity") == contract
    my_dapp = (QUICKSTART / "src" / "MyDapp.sol").read_text()
    assert _fenced(readme, "<!-- quickstart: src/MyDapp.sol -->", "solidity") == my_dapp
    gas_test = _fenced(readme, "Measure your callback with forge", "solidity")
    assert textwrap.indent(gas_test, "    ") in (QUICKSTART / "test" / "EmbeddingStore.t.sol").read_text()
    install = _fenced(readme, "<!-- quickstart: install -->", "sh")
    manifest = json.loads((QUICKSTART / "package.json").read_text())
    assert f"coordinator_contract/{tarball_name()}" in install, "the README installs the tarball `make package` makes"
    assert "solc@" + manifest["devDependencies"]["solc"] in install
    test_file = (QUICKSTART / "test" / "EmbeddingStore.t.sol").read_text()
    assert _fenced(readme, "<!-- quickstart: test/EmbeddingStore.t.sol -->", "solidity") == test_file


def test_natspec_has_no_at_sign_outside_tags() -> None:
    """solc reads `@word` on a continuation line of a NatSpec comment as a tag and refuses to compile: the shipped
    sources (which users copy and reflow) keep `@` to tag positions, e.g. no model name such as `x@1` in prose."""
    offenders = []
    for path in [*CONTRACTS_DIR.glob("src/**/*.sol"), *CONTRACTS_DIR.glob("testing/*.sol"), *QUICKSTART.rglob("*.sol")]:
        if "node_modules" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip()
            if not text.startswith("///") and not text.startswith("*"):
                continue
            body = re.sub(r"^(///|\*)\s*(@(notice|dev|param|return|title|inheritdoc|author|custom:\S+)\b)?", "", text)
            if "@" in body:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {text}")
    assert not offenders, "\n".join(offenders)


#: The Markdown files a dApp developer copies Solidity from.
DOCS = [
    "README.md",
    "coordinator_contract/README.md",
    "containers/README.md",
    *(f"containers/{m}/README.md" for m in ("classify", "embed", "generate", "llm", "echo")),
]


def _whole_contracts() -> list[tuple[str, str]]:
    """Every ```solidity block of the docs that declares a contract, library or interface (fragments, such as a
    function body, are left out), as (where, source)."""
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for match in re.finditer(r"```solidity\n(.*?)```", text, re.S):
            if re.search(r"^(abstract contract|contract|library|interface) \w+", match.group(1), re.M):
                found.append((f"{doc}:{text[: match.start()].count(chr(10)) + 1}", match.group(1)))
    return found


def test_every_whole_contract_in_the_docs_compiles_against_the_package(tarball: Path, tmp_path: Path) -> None:
    """Copy-paste safety: each documented contract, put in a fresh quick-start project as a user would, compiles
    with the installed package and the documented foundry.toml (imports, names, NatSpec and all)."""
    snippets = _whole_contracts()
    assert len(snippets) >= 5, snippets
    project = fresh_project(tmp_path, "docs")
    install(project, str(tarball), str(ROOT_SOLC))
    folder = project / "snippets"  # beside src/, so a quoted test's `../src/...` import resolves as in test/
    folder.mkdir()
    for i, (where, source) in enumerate(snippets):
        header = "" if "pragma solidity" in source else "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.24;\n\n"
        (folder / f"Snippet{i}.sol").write_text(f"// {where}\n{header}{source}")
    result = run([tool("forge"), "build", "snippets"], cwd=project, check=False)
    assert result.returncode == 0, "\n".join(f"Snippet{i}.sol is {w}" for i, (w, _) in enumerate(snippets)) + (
        "\n" + result.stdout + result.stderr
    )
    built = [i for i in range(len(snippets)) if (project / "out" / f"Snippet{i}.sol").is_dir()]
    assert built == list(range(len(snippets))), f"compiled {built} of {len(snippets)}"
