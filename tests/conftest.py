"""Shared fixtures: real anvil, real contracts, real model servers on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from node.devnet.postgres import ThrowawayPostgres

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def contracts_built() -> None:
    """Compiles the contracts once per session (incremental, so cheap after `make build`)."""
    from node.devnet import forge_build

    forge_build()


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    """One throwaway PostgreSQL cluster for the session (Debian's server, initdb + pg_ctl on a free port), in a
    folder of its own under the system's temporary folder (pytest's are root's alone; the server runs as
    `postgres` under root), removed after."""
    from node.devnet.postgres import ThrowawayPostgres

    with ThrowawayPostgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's job store lives, once per backend (one suite, both stores): an SQLite file in `tmp_path`, or a
    new, empty database on the session's PostgreSQL cluster. Open it as often as the test likes (a restart)."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.db")
    pg: ThrowawayPostgres = request.getfixturevalue("postgres")
    return pg.new_database()
