"""The whole system on a real anvil: contracts deployed, the MiniLM classifier container, the node process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.devnet import Devnet, Proc


@dataclass
class System:
    dev: Devnet
    node: Proc
    container_url: str
    config: Path


@pytest.fixture(scope="module")
def system(contracts_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with Devnet(tmp_path_factory.mktemp("devnet")) as dev:
        dev.start_anvil()
        dev.deploy()
        _, url = dev.start_container()
        config = dev.write_node_config({dev.model_name: url})
        node = dev.start_node(config)
        yield System(dev, node, url, config)
