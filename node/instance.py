"""One node per job store and per key: the locks `infera run` takes before it touches either.

Two nodes on one store would both resume, compute and send its jobs; two nodes sending from one key would take
each other's nonces and replace each other's transactions. `hold_instance` takes an exclusive `flock` on
`<store path>.lock`, on the keystore file itself when the key comes from one (opened read-only: flock needs no
write access, and nothing is created beside the keystore, which may live under a read-only /etc), and on one file
per key address (and chain endpoint) in a per-user runtime folder (systemd's `$RUNTIME_DIRECTORY`, else an absolute
`$XDG_RUNTIME_DIR/infera/`, else `/tmp/infera-<uid>/`, 0700), and writes `pid host started_at` into each file it
may write, so a refused second node can name the holder (the keystore's holder is found in `/proc/locks`).

Guarantees: a lock goes with its holder's process however that ends (SIGKILL included: it is an `flock`), so a
stale lock file never blocks a new node; a refusal raises `InstanceLocked` (one line: what is held, by which PID on
which host since when, and what to do) before anything was changed. The commands that send from a node's key
(`infera request`, `infera node register|stake|…`) check the same locks (`key_holder`) and refuse while a node
holds them. A key listed twice in one node's `[wallet]` and a store path that is a folder or lies in a missing
folder are config errors (`ConfigError`), not locks.

What is caught where: a *keystore* key is caught on this host whatever the environment (the systemd unit, a login
shell, sudo or cron all lock the same keystore file), as long as both nodes name the same keystore file (a copy of
it is another file). A key from an *environment variable* is caught only between processes that see the same
runtime folder: the systemd unit (`/run/infera`), a login shell (`/run/user/<uid>/infera`) and sudo or cron
(`/tmp/infera-<uid>`) each see their own, so a unit and a hand-started `infera run` with the key in an env variable
are not caught; use a keystore for a key that more than one environment may start a node with. The key locks are
per host (another host is not seen) and per chain endpoint: the chain is told apart by its `chain.rpc_url` (the
chain id is not known before the chain answers, and every devnet chain is 31337), so one key used on one chain
through two different RPC URLs is not caught (a keystore key is: its file lock does not depend on the endpoint).
A relative `$XDG_RUNTIME_DIR` is ignored (locks never go under the current folder).
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

from node.errors import ConfigError, InferaError


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
    if systemd and not os.path.isabs(systemd):
        systemd = ""
    if base and not os.path.isabs(base):  # a relative one would put the locks under the current folder
        base = None
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


def _flock_pid(path: Path) -> int | None:
    """The PID that `/proc/locks` says holds a `flock` on the file at `path`, or None (not held, not Linux)."""
    try:
        info = path.stat()
        wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
        with open("/proc/locks") as table:
            for line in table:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
                    return int(fields[4])
    except (OSError, ValueError):
        pass
    return None


def holder_of(path: Path) -> str:
    """Who holds the lock file at `path`, as `PID 123 on host h since 2026-01-01T00:00:00Z` (what its holder wrote),
    else `PID 123 on this host` (from `/proc/locks`: a keystore holds no text of ours), or `an unknown process`.
    Never raises."""
    try:
        pid, host, started = path.read_text().split()[:3]
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(started)))
        return f"PID {int(pid)} on host {host} since {since}"
    except (OSError, ValueError):
        pid_held = _flock_pid(path)
        return f"PID {pid_held} on this host" if pid_held is not None else "an unknown process"


class InstanceLocks:
    """The locks of one running node (file descriptors: closing them releases the locks). `release()` is idempotent;
    a lost reference releases them too."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def take(self, path: Path, what: str, advice: str, *, read_only: bool = False) -> None:
        """Takes an exclusive `flock` on `path` (created 0644 when missing) and writes `pid host started_at` there;
        `read_only`: opens an existing file read-only and writes nothing (a keystore). Raises `InstanceLocked`
        naming `what`, the holder and `advice` when another process holds it, or saying why the file cannot be
        opened."""
        flags = os.O_RDONLY if read_only else os.O_RDWR | os.O_CREAT
        try:
            fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise InstanceLocked(f"{what}: cannot open its lock file {path} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InstanceLocked(
                f"{what} is in use by another infera node ({holder_of(path)}; lock {path}): {advice}"
            ) from None
        if not read_only:
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


def check_store_path(path: Path) -> Path:
    """`path` (`store.path`) made absolute, after checking it can be a SQLite file: not a folder, in a folder that
    exists. Raises `ConfigError` (one line: `store.path: …`) otherwise; nothing is created."""
    where = path.expanduser().absolute()
    if where.is_dir():
        raise ConfigError(f"store.path: {where} is a folder: give a file in it, e.g. {where / 'infera.db'}")
    if not where.parent.is_dir():
        raise ConfigError(
            f"store.path: the folder {where.parent} does not exist: create it (the node creates only the file),"
            " or fix the path"
        )
    return where.resolve()


def listed_twice(addresses: Sequence[str], sources: Sequence[str] = ()) -> str | None:
    """The line for a key address found more than once among `addresses` (one per key, in `[wallet]` order), naming
    where each copy comes from when `sources` (parallel to `addresses`: an env variable, `keystore PATH`) is given;
    None when every key is listed once."""
    from eth_utils.address import to_checksum_address

    seen: dict[str, list[int]] = {}
    for i, address in enumerate(addresses):
        seen.setdefault(address.lower(), []).append(i)
    for address, where in seen.items():
        if len(where) > 1:
            named = f" ({', '.join(sources[i] for i in where)})" if len(sources) == len(addresses) else ""
            return (
                f"key {to_checksum_address(address)} is listed twice in [wallet]{named}: a node sends from each of its"
                " keys once; remove the repeat"
            )
    return None


def hold_instance(
    store_path: Path, addresses: Sequence[str], rpc_url: str, *, keystore: Path | None = None
) -> InstanceLocks:
    """Takes this node's locks: its job store (`<store_path>.lock`), then its keystore file (when given), then each
    key address on `rpc_url`'s chain. Returns them (keep the object for the node's life; `release()` when it stops).
    Raises `ConfigError` when a key is listed twice or the store path cannot be a file (see `check_store_path`), and
    `InstanceLocked` (holding none) when another process holds any of them."""
    from eth_utils.address import to_checksum_address

    from node.chain.rpc import public_url

    twice = listed_twice(addresses)
    if twice is not None:
        raise ConfigError(twice)
    store = check_store_path(store_path)
    locks = InstanceLocks()
    try:
        locks.take(
            store.with_name(store.name + ".lock"),
            f"store.path {store}",
            "stop that node first, or give this one its own [store] path",
        )
        if keystore is not None:
            take_keystore(locks, keystore)
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


def hold_leader_keys(addresses: Sequence[str], rpc_url: str) -> tuple[InstanceLocks, list[str]]:
    """The key locks of a replica that has just taken the leader lease, so `infera node …` commands see that a node
    sends from its keys: each taken where free. One still held by another process (a deposed leader on this host,
    paused) is left to it: the lease, not the lock, decides which replica sends. Returns the locks and a line per
    key left (to log)."""
    from eth_utils.address import to_checksum_address

    locks, left = InstanceLocks(), []
    for address in addresses:
        try:
            locks.take(key_lock_path(address, rpc_url), f"key {to_checksum_address(address)}", "")
        except InstanceLocked as exc:
            left.append(str(exc))
    return locks, left


def take_keystore(locks: InstanceLocks, keystore: Path) -> None:
    """Adds an exclusive `flock` on the keystore file itself to `locks` (read-only; see the module's notes). Raises
    `InstanceLocked` when another process holds it."""
    path = keystore.expanduser().resolve()
    locks.take(
        path,
        f"keystore {path}",
        "two nodes sending from one key take each other's nonces: stop that node first, or give this one another key"
        " in [wallet]",
        read_only=True,
    )


def key_holder(address: str, rpc_url: str | None, keystore: Path | None = None) -> str | None:
    """Who holds the key `address` as a running node's key, checked without blocking (and without holding
    anything afterwards): the lock of `keystore` (when given) and the key's lock on `rpc_url`'s chain (every chain
    endpoint when None). Returns the holder (`PID 123 on host h since …`) or None when no process holds them."""
    paths = [keystore.expanduser().resolve()] if keystore is not None else []
    try:
        folder = runtime_dir()
    except InstanceLocked:
        folder = None
    if folder is not None and rpc_url is not None:
        paths.append(key_lock_path(address, rpc_url))
    elif folder is not None:
        paths += sorted(folder.glob(f"key-{address.lower()}-*.lock"))
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # no such lock file: nobody holds it
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # conflicts only with a node's exclusive lock
        except BlockingIOError:
            return holder_of(path)
        finally:
            os.close(fd)  # releases the probe's shared lock at once
    return None
