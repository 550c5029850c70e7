"""Loads the node's signing key from an env variable or an encrypted keystore; never logs it."""

from __future__ import annotations

import json
import os

from eth_account import Account
from eth_account.signers.local import LocalAccount

from node.config import WalletConfig
from node.errors import ConfigError


def load_account(wallet: WalletConfig) -> LocalAccount:
    """The account named by the wallet config; errors name the key to fix and never contain the secret."""
    if wallet.keystore_path is not None:
        password_env = wallet.keystore_password_env or ""
        password = os.environ.get(password_env)
        if password is None:
            raise ConfigError(f"wallet.keystore_password_env: env variable {password_env} is not set")
        try:
            keyfile = json.loads(wallet.keystore_path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"wallet.keystore_path: cannot read keystore: {exc}") from None
        try:
            key = Account.decrypt(keyfile, password)
        except ValueError:
            raise ConfigError("wallet.keystore_path: wrong password or corrupt keystore") from None
        account: LocalAccount = Account.from_key(key)
        return account
    env = wallet.private_key_env or ""
    secret = os.environ.get(env)
    if not secret:
        raise ConfigError(f"wallet.private_key_env: env variable {env} is not set")
    try:
        account = Account.from_key(secret.strip())
    except Exception:
        raise ConfigError(f"wallet.private_key_env: {env} does not hold a valid private key") from None
    return account
