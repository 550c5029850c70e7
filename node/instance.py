"""One node per job store and per key: the locks `infera run` takes before it touches either.

Two nodes on one store would both resume, compute and send its jobs; two nodes sending from one key would take
each other's nonces and replace each other's transactions. `hold_instance` takes an exclusive `flock` on
`<store path>.lock` and on one file per key address (and chain endpoint) in a per-user runtime folder (systemd's
`$RUNTIME_DIRECTORY`, else `$XDG_RUNTIME_DIR/infera/`, else `/tmp/infera-<uid>/`, 0700), and writes
`pid host started_at` into each, so a refused second node can name the holder.

Guarantees: a lock goes with its holder's process however that ends (SIGKILL included: it is an `flock`), so a
stale lock file never blocks a new node; a refusal raises `InstanceLocked` (one line: what is held, by which PID on
which host since when, and what to do) before anything was changed.

Limits: the key locks are per host (another host is not seen) and per chain endpoint: the chain is told apart by its
`chain.rpc_url` (the chain id is not known before the chain answers, and every devnet chain is 31337), so one key
used on one chain through two different RPC URLs is not caught.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import stat
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from node.errors import InferaError


class InstanceLocked(InferaError):
    """Another live process holds this node's job store or one of its keys; the message names the holder (PID, host,
    since when) and what to do."""


def runtime_dir() -> Path:
    """The per-user folder for key locks: systemd's `$RUNTIME_DIRECTORY` (the unit's `RuntimeDirectory=`, shared by
    every unit that names it, where each has a `/tmp` of its own), else `$XDG_RUNTIME_DIR/infera`, else
    `<tmp>/infera-<uid>`; created 0700. Raises `InstanceLocked` when it cannot be made, or exists but is not a
    folder of this user's that only this user may write (another user could otherwise plant or hold the locks)."""
    systemd = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    base = os.environ.get("XDG_RUNTIME_DIR")
    if systemd:
        folder = Path(systemd)
    else:
        folder = Path(base) / "infera" if base else Path(tempfile.gettempdir()) / f"infera-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, parents=bool(base), exist_ok=True)
        info = folder.lstat()
    except OSError as exc:
        raise InstanceLocked(
            f"cannot create the lock folder {folder} ({exc.strerror}): set XDG_RUNTIME_DIR to a folder of yours"
        ) from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise InstanceLocked(
            f"the lock folder {folder} is not a folder of this user's that only it may write: remove it, or set "
            "XDG_RUNTIME_DIR to a folder of yours"
        )
    return folder


def holder_of(path: Path) -> str:
    """Who holds the lock file at `path`, as `PID 123 on host h since 2026-01-01T00:00:00Z` (what its holder wrote),
    or `an unknown process` when the file says nothing readable. Never raises."""
    try:
        pid, host, started = path.read_text().split()[:3]
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(started)))
        return f"PID {int(pid)} on host {host} since {since}"
    except (OSError, ValueError):
        return "an unknown process"


class InstanceLocks:
    """The locks of one running node (file descriptors: closing them releases the locks). `release()` is idempotent;
    a lost reference releases them too."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def take(self, path: Path, what: str, advice: str) -> None:
        """Takes an exclusive `flock` on `path` (created 0644 when missing) and writes `pid host started_at` there.
        Raises `InstanceLocked` naming `what`, the holder and `advice` when another process holds it, or saying why
        the file cannot be opened."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise InstanceLocked(f"{what}: cannot open its lock file {path} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InstanceLocked(
                f"{what} is in use by another infera node ({holder_of(path)}; lock {path}): {advice}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode(), 0)
        self._fds.append(fd)

    def release(self) -> None:
        """Releases every lock taken (the files stay: an unheld file blocks nobody)."""
        while self._fds:
            with contextlib.suppress(OSError):
                os.close(self._fds.pop())

    def __del__(self) -> None:
        self.release()


def key_lock_path(address: str, rpc_url: str) -> Path:
    """The lock file of key `address` (0x-hex) on the chain behind `rpc_url`, in `runtime_dir()`."""
    endpoint = hashlib.sha256(rpc_url.strip().rstrip("/").lower().encode()).hexdigest()[:12]
    return runtime_dir() / f"key-{address.lower()}-{endpoint}.lock"


def hold_instance(store_path: Path, addresses: Sequence[str], rpc_url: str) -> InstanceLocks:
    """Takes this node's locks: its job store (`<store_path>.lock`), then each key address on `rpc_url`'s chain.
    Returns them (keep the object for the node's life; `release()` when it stops). Raises `InstanceLocked` (holding
    none) when another process holds any of them."""
    from eth_utils.address import to_checksum_address

    from node.chain.rpc import public_url

    locks = InstanceLocks()
    try:
        store = store_path.resolve()
        locks.take(
            store.with_name(store.name + ".lock"),
            f"store.path {store}",
            "stop that node first, or give this one its own [store] path",
        )
        for address in addresses:
            locks.take(
                key_lock_path(address, rpc_url),
                f"key {to_checksum_address(address)} on {public_url(rpc_url)}",
                "two nodes sending from one key take each other's nonces: stop that node first, or give this one "
                "another key in [wallet]",
            )
    except BaseException:
        locks.release()
        raise
    return locks
