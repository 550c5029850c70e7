"""Keys: loading from an env variable, a keystore with its password in an env variable or a file, and writing
keystores. Real eth-account keystores (a light scrypt cost, so each unlock takes milliseconds)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from node.config import WalletConfig
from node.errors import ConfigError
from node.keys import encrypt_key, keystore_target, list_keystores, load_account, write_keystore

PASSWORD = "pa55 word with spaces"
LIGHT_N = 2**10


@pytest.fixture(scope="module")
def account() -> LocalAccount:
    created: LocalAccount = Account.create()
    return created


@pytest.fixture
def keystore(tmp_path: Path, account: LocalAccount) -> Path:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(encrypt_key(account.key, PASSWORD, scrypt_n=LIGHT_N)))
    return path


def password_file(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "password"
    path.write_text(content)
    return path


@pytest.mark.parametrize("ending", ["", "\n", "\r\n"])
def test_a_keystore_unlocks_with_the_password_file_minus_its_line_ending(
    tmp_path: Path, keystore: Path, account: LocalAccount, ending: str
) -> None:
    wallet = WalletConfig(keystore_path=keystore, keystore_password_file=password_file(tmp_path, PASSWORD + ending))
    assert load_account(wallet).address == account.address


def test_only_the_last_line_ending_is_part_of_the_file_not_the_password(tmp_path: Path, keystore: Path) -> None:
    wallet = WalletConfig(keystore_path=keystore, keystore_password_file=password_file(tmp_path, PASSWORD + "\n\n"))
    with pytest.raises(ConfigError, match="wrong password"):
        load_account(wallet)


def test_a_keystore_unlocks_with_the_password_env(
    keystore: Path, account: LocalAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KS_PASSWORD", PASSWORD)
    wallet = WalletConfig(keystore_path=keystore, keystore_password_env="KS_PASSWORD")
    assert load_account(wallet).address == account.address


def test_a_missing_password_file_is_named_with_its_key(tmp_path: Path, keystore: Path) -> None:
    wallet = WalletConfig(keystore_path=keystore, keystore_password_file=tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"^wallet\.keystore_password_file: password file .*/nope does not exist$"):
        load_account(wallet)


def test_an_unreadable_password_file_is_named_with_its_key(tmp_path: Path, keystore: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    wallet = WalletConfig(keystore_path=keystore, keystore_password_file=folder)
    with pytest.raises(ConfigError, match=r"^wallet\.keystore_password_file: cannot read password file"):
        load_account(wallet)


def test_a_wrong_password_is_said_without_showing_it(tmp_path: Path, keystore: Path) -> None:
    wallet = WalletConfig(keystore_path=keystore, keystore_password_file=password_file(tmp_path, "guess"))
    with pytest.raises(ConfigError, match=r"^wallet\.keystore_path: wrong password") as info:
        load_account(wallet)
    assert "guess" not in str(info.value)


def test_a_file_that_is_not_a_keystore_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": 1}')
    wallet = WalletConfig(keystore_path=bogus, keystore_password_file=password_file(tmp_path, PASSWORD))
    with pytest.raises(ConfigError, match="is not an encrypted keystore"):
        load_account(wallet)


def test_an_env_key_is_loaded_and_a_bad_one_is_not_echoed(
    account: LocalAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_KEY", account.key.hex())
    assert load_account(WalletConfig(private_key_env="NODE_KEY")).address == account.address
    monkeypatch.setenv("NODE_KEY", "secret-but-not-a-key")
    with pytest.raises(ConfigError, match="does not hold a valid private key") as info:
        load_account(WalletConfig(private_key_env="NODE_KEY"))
    assert "secret-but-not-a-key" not in str(info.value)


def test_a_written_keystore_is_owner_only_and_never_overwritten(tmp_path: Path, account: LocalAccount) -> None:
    keyfile = encrypt_key(account.key, PASSWORD, scrypt_n=LIGHT_N)
    path = write_keystore(keyfile, keystore_target(tmp_path / "keys", account.address))
    assert path.parent == tmp_path / "keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert account.address.lower().removeprefix("0x") in path.name
    assert account.key.hex().removeprefix("0x") not in path.read_text()
    with pytest.raises(ConfigError, match="already exists"):
        keystore_target(path, account.address)
    with pytest.raises(ConfigError, match="already exists"):
        write_keystore(keyfile, path)  # even if the file appeared after the check
    assert list_keystores(tmp_path / "keys") == [(path, account.address)]


def test_list_skips_files_that_are_not_keystores(tmp_path: Path, account: LocalAccount) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "other.json").write_text("[1, 2]")
    path = write_keystore(
        encrypt_key(account.key, PASSWORD, scrypt_n=LIGHT_N), keystore_target(tmp_path / "a.json", account.address)
    )
    assert list_keystores(tmp_path) == [(path, account.address)]


def test_an_empty_password_is_refused(account: LocalAccount) -> None:
    with pytest.raises(ConfigError, match="must not be empty"):
        encrypt_key(account.key, "", scrypt_n=LIGHT_N)
