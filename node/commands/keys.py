"""`infera keys`: encrypted keystores (eth-account, scrypt) for the node's signing key.

Guarantees: a key is read from a hidden prompt or stdin, never from the command line; neither the key nor the
password is ever printed; keystore files are written 0600 and never overwrite one that exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from node.commands import PASSWORD_ENV, PASSWORD_FILE, read_password
from node.commands.console import note, spinner
from node.errors import ConfigError

keys_app = typer.Typer(no_args_is_help=True, help="Encrypted keystores for the node's signing key.")

KEYSTORE_OUT = typer.Option(
    None, "--out", help="keystore file (*.json) or folder (default ~/.infera/keystore/); never overwritten"
)


@keys_app.command("new")
def keys_new(
    out: Path | None = KEYSTORE_OUT,
    password_env: str | None = PASSWORD_ENV,
    password_file: Path | None = PASSWORD_FILE,
) -> None:
    """Create a new key in an encrypted keystore (scrypt); prints its address, never the key."""
    from eth_account import Account

    from node.keys import encrypt_key, keystore_target, write_keystore

    account = Account.create()
    target = keystore_target(out, account.address)
    password = read_password(password_env, password_file, confirm=True)
    with spinner("encrypting (scrypt)"):
        path = write_keystore(encrypt_key(account.key, password), target)
    _print_keystore(account.address, path)


@keys_app.command("import")
def keys_import(
    out: Path | None = KEYSTORE_OUT,
    password_env: str | None = PASSWORD_ENV,
    password_file: Path | None = PASSWORD_FILE,
) -> None:
    """Encrypt an existing private key into a keystore. The key is read from a hidden prompt, or from stdin when it
    is not a terminal (`infera keys import < keyfile`); never from the command line."""
    from eth_account import Account

    from node.keys import encrypt_key, keystore_target, write_keystore

    tty = sys.stdin.isatty()
    secret = str(typer.prompt("Private key (hex)", hide_input=True)) if tty else sys.stdin.readline()
    try:
        account = Account.from_key(secret.strip())
    except Exception:
        raise ConfigError("that is not a valid private key (64 hex digits, 0x optional)") from None
    target = keystore_target(out, account.address)
    password = read_password(password_env, password_file, confirm=True)
    with spinner("encrypting (scrypt)"):
        path = write_keystore(encrypt_key(account.key, password), target)
    _print_keystore(account.address, path)


def _print_keystore(address: str, path: Path) -> None:
    typer.echo(f"address   {address}")
    typer.echo(f"keystore  {path} (mode 0600)")
    note(
        "to sign with it, in node.toml:\n[wallet]\n"
        f'keystore_path = "{path}"\nkeystore_password_file = "..."   # or keystore_password_env = "..."'
    )


@keys_app.command("list")
def keys_list(folder: Path = typer.Argument(Path("~/.infera/keystore"), help="folder of keystore files")) -> None:
    """List the keystores in a folder: address and file (nothing is decrypted)."""
    from node.keys import list_keystores

    if not folder.expanduser().is_dir():
        raise ConfigError(f"{folder} is not a folder: create a key with `infera keys new`")
    found = list_keystores(folder)
    if not found:
        note(f"no keystores in {folder}")
    for path, address in found:
        typer.echo(f"{address}  {path}")
