"""The instance locks of node/instance.py with real processes: a holder is named, a SIGKILLed one leaves no stale
lock, and a lock folder another user could write is refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from node.devnet import ROOT
from node.errors import ConfigError
from node.instance import InstanceLocked, hold_instance, key_holder, runtime_dir

ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
RPC = "http://127.0.0.1:8545"

HOLDER = """
import sys
from pathlib import Path
from node.instance import hold_instance
keystore = Path(sys.argv[4]) if len(sys.argv) > 4 else None
locks = hold_instance(Path(sys.argv[1]), [sys.argv[2]], sys.argv[3], keystore=keystore)
print("held", flush=True)
sys.stdin.read()  # held until the test closes our stdin or kills us
"""


@pytest.fixture(autouse=True)
def own_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))


def start_holder(
    store: Path, address: str = ADDRESS, rpc: str = RPC, keystore: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store), address, rpc, *([str(keystore)] if keystore else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    return proc


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    """Kills a holder (SIGKILL: no cleanup, as a crash) and closes its pipes."""
    proc.send_signal(sig)
    proc.wait()
    proc.stdin.close()  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]


def test_a_held_store_or_key_names_its_holder_and_a_sigkilled_one_blocks_nobody(tmp_path: Path) -> None:
    store = tmp_path / "node.db"
    holder = start_holder(store)
    try:
        with pytest.raises(InstanceLocked) as caught:
            hold_instance(store, ["0x" + "11" * 20], RPC)
        assert f"is in use by another infera node (PID {holder.pid} on host {socket.gethostname()} since " in str(
            caught.value
        )
        with pytest.raises(InstanceLocked, match=rf"key {ADDRESS} on {RPC} is in use .*PID {holder.pid} "):
            hold_instance(tmp_path / "other.db", [ADDRESS.lower()], RPC + "/")  # same key, same chain endpoint
        other = hold_instance(tmp_path / "other.db", [ADDRESS], "http://127.0.0.1:9545")  # another chain: free
        other.release()
    finally:
        stop(holder)
    assert (tmp_path / "node.db.lock").exists()  # the file stays; its lock went with the process
    hold_instance(store, [ADDRESS], RPC).release()  # at once: no stale lock to wait out


def test_a_refused_start_holds_nothing(tmp_path: Path) -> None:
    holder = start_holder(tmp_path / "a.db", address="0x" + "22" * 20)
    try:
        with pytest.raises(InstanceLocked):  # its store is free, its second key is not
            hold_instance(tmp_path / "b.db", [ADDRESS, "0x" + "22" * 20], RPC)
        hold_instance(tmp_path / "b.db", [ADDRESS], RPC).release()  # so the store and first key were let go
    finally:
        stop(holder)


def test_a_lock_folder_others_may_write_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    (shared / "infera").mkdir(parents=True)
    (shared / "infera").chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    with pytest.raises(InstanceLocked, match="not a folder of this user's that only it may write"):
        runtime_dir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "unit"))  # a systemd unit's RuntimeDirectory= wins
    assert runtime_dir() == tmp_path / "unit"
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert runtime_dir().name == f"infera-{os.getuid()}"
    assert runtime_dir().stat().st_mode & 0o777 == 0o700


def test_a_keystore_key_is_caught_whatever_runtime_folder_each_node_sees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keystore = tmp_path / "etc" / "key.json"
    keystore.parent.mkdir()
    keystore.write_text('{"address": "70997970c51812dc3a010c7d01b50e0d17dc79c8"}')
    keystore.chmod(0o400)  # read-only, as under ProtectSystem=strict: flock needs no write access
    unit = tmp_path / "unit-run"
    holder = start_holder(tmp_path / "a.db", keystore=keystore, env={"RUNTIME_DIRECTORY": str(unit)})  # the unit
    try:
        # A login shell sees another runtime folder: the key's lock file there is free, the keystore's is not.
        with pytest.raises(InstanceLocked) as caught:
            hold_instance(tmp_path / "b.db", [ADDRESS], RPC, keystore=keystore)
        assert str(caught.value).startswith(f"keystore {keystore} is in use by another infera node (PID {holder.pid} ")
        assert not list(keystore.parent.glob("*.lock"))  # nothing created beside the keystore
        assert key_holder(ADDRESS, RPC, keystore) == f"PID {holder.pid} on this host"  # what `infera node …` checks
        monkeypatch.setenv("RUNTIME_DIRECTORY", str(unit))  # the unit's own folder: the key lock names it too
        assert key_holder(ADDRESS, None).startswith(f"PID {holder.pid} on host ")  # type: ignore[union-attr]
        assert key_holder(ADDRESS, "http://127.0.0.1:9545") is None  # another chain endpoint, env-var key: free
    finally:
        stop(holder)
    assert key_holder(ADDRESS, RPC, keystore) is None  # it went with its process
    hold_instance(tmp_path / "b.db", [ADDRESS], RPC, keystore=keystore).release()


def test_a_relative_xdg_runtime_dir_never_puts_locks_under_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative")
    assert runtime_dir() == Path(tempfile.gettempdir()) / f"infera-{os.getuid()}"
    assert not (tmp_path / "relative").exists()


def test_a_key_listed_twice_is_a_config_error_not_a_lock_held_by_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^key {ADDRESS} is listed twice in \[wallet\]: "):
        hold_instance(tmp_path / "a.db", [ADDRESS, "0x" + "22" * 20, ADDRESS.lower()], RPC)
    assert not (tmp_path / "a.db.lock").exists()


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("folder", "store.path: {tmp}/folder is a folder: give a file in it, e.g. {tmp}/folder/infera.db"),
        ("missing/node.db", "store.path: the folder {tmp}/missing does not exist: create it (the node creates only"),
    ],
)
def test_a_store_path_that_cannot_be_a_file_is_named_before_any_lock_file(tmp_path: Path, path: str, line: str) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError) as caught:
        hold_instance(tmp_path / path, [ADDRESS], RPC)
    assert str(caught.value).startswith(line.format(tmp=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "run"]  # no lock file anywhere


def test_infera_run_by_hand_is_refused_on_the_keystore_a_unit_holds(tmp_path: Path) -> None:
    """The unit (its own RuntimeDirectory) holds the keystore; `infera run` from a login shell (another runtime folder,
    another store) stops at the keystore's lock before it unlocks or opens anything, exit 1 (that node may stop)."""
    keystore = tmp_path / "key.json"
    keystore.write_text('{"address": "70997970c51812dc3a010c7d01b50e0d17dc79c8"}')
    keystore.chmod(0o400)
    holder = start_holder(tmp_path / "unit.db", keystore=keystore, env={"RUNTIME_DIRECTORY": str(tmp_path / "unit")})
    config = tmp_path / "hand.toml"
    config.write_text(
        '[chain]\nrpc_url = "http://127.0.0.1:1"\ncoordinator_address = "0x5fbdb2315678afecb367f032d93f642f64180aa3"\n'
        f'[wallet]\nkeystore_path = "{keystore}"\nkeystore_password_env = "NO_SUCH_PASSWORD"\n'
        f'[store]\npath = "{tmp_path / "hand.db"}"\n[[models]]\nname = "echo"\nurl = "http://127.0.0.1:3000"\n'
    )
    try:
        run = subprocess.run(
            [sys.executable, "-m", "node.cli", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(tmp_path / "run")},
            timeout=60,
            check=False,
        )
    finally:
        stop(holder)
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith(f"infera: keystore {keystore} is in use by another infera node (PID {holder.pid} ")
    assert not (tmp_path / "hand.db").exists()
    assert not (tmp_path / "hand.db.lock").exists()
