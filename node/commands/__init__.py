"""What the `infera` subcommands share: the common options, and how they get a config, a key and the contracts.

Guarantees: a private key or password is never taken from the command line (only from env variables, files, stdin
or a hidden prompt) and never printed.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from node.commands.console import spinner
from node.errors import ConfigError, InferaError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from node.commands.chain_ops import Contracts
    from node.config import NodeConfig

CONFIG = typer.Option(..., "--config", "-c", help="node config file (TOML)")
KEY_ENV = typer.Option(None, "--key-env", help="env variable holding the hex private key to sign with")
KEYSTORE = typer.Option(None, "--keystore", help="encrypted keystore to sign with (password: prompt, or below)")
PASSWORD_ENV = typer.Option(None, "--password-env", help="env variable holding the keystore password")
PASSWORD_FILE = typer.Option(None, "--password-file", help="file holding the keystore password")
FORCE = typer.Option(
    False,
    "--force",
    help="send even though a running node holds this key (the node then finds its next nonce taken and resyncs; a"
    " delivery of its in flight may be replaced)",
)


class KeyInUse(InferaError):
    """The key a command would send from is held by a running node (its lock, `node.instance`); the message names
    the holder's PID and what to do. Exit 1: the node may stop."""


def refuse_if_held(
    address: str, cfg: NodeConfig | None, keystore: Path | None, paused: Callable[[str], bool] | None = None
) -> None:
    """Raises `KeyInUse` when a running `infera run` holds `address` (or `keystore`): checked on the locks that
    node takes (without blocking or holding them), on `cfg`'s chain endpoint (every endpoint without a config).
    `paused(address)`: True when that node sends nothing from the key now (the registry does not take it as active,
    so the node pauses it): then the command goes on, saying so (registering or topping up the stake of a running
    node's key is what its runbooks ask for)."""
    from node.commands.console import note
    from node.instance import key_holder

    holder = key_holder(address, cfg.chain.rpc_url if cfg is not None else None, keystore)
    if holder is None:
        return
    if paused is not None and paused(address):
        note(
            f"key {address} is held by a running infera node ({holder}), which sends nothing from it while the"
            " registry does not take it as active: going on"
        )
        return
    raise KeyInUse(
        f"key {address} is held by a running infera node ({holder}): a transaction from it now would take that"
        " node's next nonce; sign with another key (--key-env NAME), stop that node first, or pass --force"
    )


def load_config_file(config: Path) -> NodeConfig:
    """The node config at `config` (TOML, with `INFERA_*` env overrides); raises `ConfigError` naming the key and
    the reason when it is missing or invalid."""
    from node.config import load_config

    return load_config(config)


def read_password(password_env: str | None, password_file: Path | None, *, confirm: bool) -> str:
    """The password from `--password-env`, `--password-file`, or a hidden prompt on a terminal."""
    from node.keys import read_password_file

    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise ConfigError(f"--password-env: env variable {password_env} is not set")
        return value
    if password_file is not None:
        return read_password_file(password_file, key="--password-file")
    if not sys.stdin.isatty():
        raise ConfigError("no terminal to ask for the password: pass --password-file or --password-env")
    value = typer.prompt("Keystore password", hide_input=True, confirmation_prompt=confirm)
    return str(value)


def load_signer(
    cfg: NodeConfig | None,
    key_env: str | None,
    keystore: Path | None,
    password_env: str | None,
    password_file: Path | None,
    *,
    sending: bool = True,
    force: bool = False,
    paused: Callable[[str], bool] | None = None,
) -> LocalAccount:
    """The account to sign with: `--key-env` or `--keystore` if given, else the config's wallet. With `sending`
    (the command will send from it) and not `force`, raises `KeyInUse` when a running node holds that key, unless
    `paused` says that node sends nothing from it (see `refuse_if_held`); raises `ConfigError` for a key that
    cannot be had."""
    from node.keys import account_from_env, decrypt_keystore, load_account

    if key_env and keystore:
        raise ConfigError("give --key-env or --keystore, not both")
    account: LocalAccount
    if key_env:
        account = account_from_env(key_env, key="--key-env")
    elif keystore is not None:
        password = read_password(password_env, password_file, confirm=False)
        with spinner("unlocking the keystore"):
            account = decrypt_keystore(keystore, password, key="--keystore")
    elif cfg is None:
        raise ConfigError("no key: pass --key-env NAME or --keystore PATH")
    else:
        keystore = cfg.wallet.keystore_path
        with spinner("unlocking the key"):
            account = load_account(cfg.wallet)
    if sending and not force:
        refuse_if_held(account.address, cfg, keystore, paused)
    return account


def open_chain(cfg: NodeConfig) -> Contracts:
    """The config's coordinator and registry, over its first RPC URL that answers."""
    from node.commands import chain_ops

    w3 = chain_ops.connect([cfg.chain.rpc_url, *cfg.chain.fallback_rpc_urls])
    return chain_ops.open_contracts(w3, cfg.chain.coordinator_address, cfg.chain.artifacts_dir)


def node_running(cfg: NodeConfig) -> bool:
    """Whether a node answers on this config's API port."""
    if cfg.api.port == 0:
        return False
    try:
        with urllib.request.urlopen(f"http://{cfg.api.host}:{cfg.api.port}/healthz", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False
