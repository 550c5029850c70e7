"""Signing keys: loaded from an env variable or an encrypted keystore, and written as keystores (`infera keys`).

Guarantees: a private key or password never appears in an error message or a log line; keystore files are written
owner-only (0600) and never overwrite an existing file; a keystore is eth-account's standard scrypt JSON (V3, the
format geth reads).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from node.config import WalletConfig
from node.errors import ConfigError

#: Where `infera keys new|import|list` put and look for keystores unless told otherwise.
DEFAULT_KEYSTORE_DIR = Path("~/.infera/keystore")
#: eth-account's default scrypt cost (~1 s to unlock): what protects a stolen keystore file.
SCRYPT_N = 262_144


def read_password_file(path: Path, *, key: str) -> str:
    """The password held in `path`, without its trailing newline; `ConfigError` naming `key` if it cannot be read."""
    try:
        text = path.expanduser().read_text()
    except FileNotFoundError:
        raise ConfigError(f"{key}: password file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{key}: cannot read password file {path}: {reason}") from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise ConfigError(f"{key}: password file {path} is empty")
    return password


def read_keystore(path: Path, *, key: str) -> dict[str, Any]:
    """The keystore JSON at `path`; `ConfigError` naming `key` if it is missing or not a keystore."""
    try:
        keyfile = json.loads(path.expanduser().read_text())
    except FileNotFoundError:
        raise ConfigError(f"{key}: keystore {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key}: cannot read keystore {path}: {type(exc).__name__}") from None
    if not isinstance(keyfile, dict) or ("crypto" not in keyfile and "Crypto" not in keyfile):
        raise ConfigError(f"{key}: {path} is not an encrypted keystore (no crypto section)")
    return keyfile


def decrypt_keystore(path: Path, password: str, *, key: str) -> LocalAccount:
    """Unlocks the keystore at `path`; `ConfigError` naming `key` on a wrong password or a damaged file."""
    keyfile = read_keystore(path, key=key)
    try:
        secret = Account.decrypt(keyfile, password)
    except ValueError:
        raise ConfigError(f"{key}: wrong password for keystore {path} (or the file is damaged)") from None
    account: LocalAccount = Account.from_key(secret)
    return account


def account_from_env(env: str, *, key: str) -> LocalAccount:
    """The account whose hex private key is in env variable `env`; `ConfigError` naming `key` otherwise."""
    secret = os.environ.get(env)
    if not secret:
        raise ConfigError(f"{key}: env variable {env} is not set")
    try:
        account: LocalAccount = Account.from_key(secret.strip())
    except Exception:
        raise ConfigError(f"{key}: {env} does not hold a valid private key") from None
    return account


def keystore_password(wallet: WalletConfig) -> str:
    """The keystore's password from `keystore_password_env`, else `keystore_password_file`."""
    if wallet.keystore_password_env:
        password = os.environ.get(wallet.keystore_password_env)
        if password is None:
            raise ConfigError(f"wallet.keystore_password_env: env variable {wallet.keystore_password_env} is not set")
        return password
    if wallet.keystore_password_file is None:  # the config validator forbids this; say so if it ever happens
        raise ConfigError("wallet.keystore_path: set keystore_password_env or keystore_password_file")
    return read_password_file(wallet.keystore_password_file, key="wallet.keystore_password_file")


def load_account(wallet: WalletConfig) -> LocalAccount:
    """The account named by the wallet config; errors name the key to fix and never contain the secret."""
    if wallet.keystore_path is not None:
        return decrypt_keystore(wallet.keystore_path, keystore_password(wallet), key="wallet.keystore_path")
    return account_from_env(wallet.private_key_env or "", key="wallet.private_key_env")


# ------------------------------------------------------------------------------------------- writing keystores


def encrypt_key(private_key: bytes, password: str, *, scrypt_n: int = SCRYPT_N) -> dict[str, Any]:
    """A V3 keystore of `private_key`, scrypt-protected by `password`."""
    if not password:
        raise ConfigError("the keystore password must not be empty")
    return Account.encrypt(private_key, password, kdf="scrypt", iterations=scrypt_n)


def keystore_filename(address: str) -> str:
    """geth's keystore file name: `UTC--<time>--<address>` (sorts by creation)."""
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime())
    return f"UTC--{stamp}.{time.time_ns() % 10**9:09d}Z--{address.lower().removeprefix('0x')}.json"


def keystore_target(out: Path | None, address: str) -> Path:
    """Where `write_keystore` puts the keystore of `address`: `out` if it is a `.json` file, else a geth-style name
    in the folder `out` (default `~/.infera/keystore/`). `ConfigError` if that file exists already."""
    target = (out or DEFAULT_KEYSTORE_DIR).expanduser()
    if target.is_dir() or target.suffix != ".json":
        target = target / keystore_filename(address)
    if target.exists():
        raise ConfigError(f"{target} already exists: choose another --out (a keystore is never overwritten)")
    return target


def write_keystore(keyfile: dict[str, Any], target: Path) -> Path:
    """Writes `keyfile` to `target` (its folder created 0700), created 0600 and never over an existing file."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = json.dumps(keyfile).encode()
    try:
        # O_EXCL: an existing keystore (maybe the only copy of a funded key) is never replaced.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{target} already exists: choose another --out (a keystore is never overwritten)") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(target, 0o600)  # the umask may have narrowed it further; never wider
    return target


def keystore_address(path: Path) -> str | None:
    """The checksummed address a keystore file declares (read without decrypting), or None if it is not one."""
    try:
        keyfile = json.loads(path.read_text())
        return str(to_checksum_address("0x" + str(keyfile["address"]).removeprefix("0x")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_keystores(folder: Path) -> list[tuple[Path, str]]:
    """(path, address) of every keystore file in `folder`, by name; files that are not keystores are skipped."""
    found = []
    for path in sorted(folder.expanduser().iterdir()):
        if path.is_file() and (address := keystore_address(path)) is not None:
            found.append((path, address))
    return found
