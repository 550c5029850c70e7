"""The whole system on a real anvil: contracts deployed, the MiniLM classifier container, the node process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account

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
        config = use_keystore(dev, dev.write_node_config({dev.model_name: url}))
        node = dev.start_node(config)
        yield System(dev, node, url, config)


#: The e2e node's keystore password: no log line of the run may contain it (nor the key).
KEYSTORE_PASSWORD = "e2e keystore password, never logged"


def use_keystore(dev: Devnet, config: Path) -> Path:
    """Switches a devnet node config to an encrypted keystore (password in a 0600 file), JSON lines and DEBUG logs:
    the most a log could leak."""
    keystore = dev.workdir / "node-key.json"
    keystore.write_text(json.dumps(Account.encrypt(dev.node_account.key, KEYSTORE_PASSWORD)))
    password_file = dev.workdir / "node-key.password"
    password_file.write_text(KEYSTORE_PASSWORD + "\n")
    password_file.chmod(0o600)
    text = config.read_text().replace(
        'private_key_env = "INFERA_PRIVATE_KEY"\n',
        f'keystore_path = "{keystore}"\nkeystore_password_file = "{password_file}"\n',
    )
    config.write_text(text + '\n[log]\nlevel = "DEBUG"\njson_lines = true\n')
    return config
