"""The instance locks of node/instance.py with real processes: a holder is named, a SIGKILLed one leaves no stale
lock, and a lock folder another user could write is refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from node.devnet import ROOT
from node.instance import InstanceLocked, hold_instance, runtime_dir

ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
RPC = "http://127.0.0.1:8545"

HOLDER = """
import sys, time
from pathlib import Path
from node.instance import hold_instance
locks = hold_instance(Path(sys.argv[1]), [sys.argv[2]], sys.argv[3])
print("held", flush=True)
time.sleep(3600)
"""


@pytest.fixture(autouse=True)
def own_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))


def start_holder(store: Path, address: str = ADDRESS, rpc: str = RPC) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store), address, rpc],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    return proc


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
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]
    assert (tmp_path / "node.db.lock").exists()  # the file stays; its lock went with the process
    hold_instance(store, [ADDRESS], RPC).release()  # at once: no stale lock to wait out


def test_a_refused_start_holds_nothing(tmp_path: Path) -> None:
    holder = start_holder(tmp_path / "a.db", address="0x" + "22" * 20)
    try:
        with pytest.raises(InstanceLocked):  # its store is free, its second key is not
            hold_instance(tmp_path / "b.db", [ADDRESS, "0x" + "22" * 20], RPC)
        hold_instance(tmp_path / "b.db", [ADDRESS], RPC).release()  # so the store and first key were let go
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]


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
