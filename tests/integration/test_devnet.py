"""The devnet's anvil on this machine's disk: what a tester's runs leave behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.devnet import Devnet


def test_a_devnet_leaves_no_anvil_state_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anvil persists old blocks' states under ~/.foundry/anvil/tmp by default and never removes them (a benchmark
    run left 75 GB there); the devnet's anvil keeps its states in memory only."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with Devnet(tmp_path / "dev") as dev:
        dev.start_anvil()
        dev.w3.provider.make_request("anvil_mine", [hex(1200)])  # type: ignore[arg-type]
        assert dev.w3.eth.block_number == 1200
    assert [p.relative_to(home) for p in home.rglob("*")] == []
