"""Shared fixtures: real anvil, real contracts, real model servers on free loopback ports."""

from __future__ import annotations

import os

import pytest

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def contracts_built() -> None:
    """Compiles the contracts once per session (incremental, so cheap after `make build`)."""
    from node.devnet import forge_build

    forge_build()
