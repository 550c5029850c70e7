"""The devnet's work folder: one devnet at a time (`hold_workdir`), a fresh state each run, and a checked `--out`.

Guarantees: while `hold_workdir` holds a folder, a second `hold_workdir` on it (any process) raises `DevnetError`
at once, naming the PID that holds it; the lock goes with the holder's process however it ends (SIGKILL included:
it is an `flock`), so a stale lock file never blocks a new devnet.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from node.devnet.processes import DevnetError

#: The lock file in the work folder; it holds the PID of the devnet that holds the folder.
LOCK_NAME = "devnet.lock"
#: What one run leaves in the work folder that the next must not read: the nodes' job stores (a fresh chain each
#: run: `node.db`, `node2.db`, … with SQLite's side files), their configs, the addresses. Only these names (a
#: `--workdir` may be any folder); the logs (appended to) and the `generate` checkpoint under `models/` are kept.
PER_RUN_FILES = re.compile(r"node\d*\.(db|db-wal|db-shm|db-journal|toml)|deployment\.json|devnet\.json")


def _lock(path: Path, what: str, advice: str, unusable: str = "cannot use it") -> int:
    """Opens `path` and takes an exclusive `flock` on it, writing this PID there; returns the descriptor (closing it
    releases the lock). Raises `DevnetError` naming `what` and the holder's PID when another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DevnetError(f"{what}: {unusable} ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DevnetError(f"{what} is in use by another devnet (PID {holder}): {advice}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def hold_workdir(workdir: Path) -> Iterator[Path]:
    """Creates `workdir` and holds it for this devnet (an exclusive `flock` on `<workdir>/devnet.lock`, which holds
    this PID) until the block ends; then removes what the previous run left there (names matching `PER_RUN_FILES`).
    Yields `workdir`. Raises `DevnetError` when another devnet holds it (naming its PID) or it cannot be created."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DevnetError(f"--workdir {workdir}: cannot use it ({exc.strerror})") from None
    fd = _lock(workdir / LOCK_NAME, f"--workdir {workdir}", "stop it, or choose another folder with --workdir DIR")
    try:
        for path in workdir.iterdir():
            if PER_RUN_FILES.fullmatch(path.name) and not path.is_dir():
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise DevnetError(
                        f"--workdir {workdir}: cannot remove the last run's {path.name} ({exc.strerror})"
                    ) from None
        yield workdir
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def hold_out(out: Path, workdir: Path) -> Iterator[Path]:
    """Holds `out` (the devnet.json path) for this devnet until the block ends, so another devnet cannot overwrite
    (then, on its stop, remove) the file this one wrote: an `flock` on `.<name>.lock` beside it. An `out` in
    `workdir` is covered by `hold_workdir` already. Yields `out`; raises `DevnetError` (naming the holder's PID)
    when another devnet writes there."""
    if out.parent == workdir:
        yield out
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DevnetError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    # The lock first: `check_writable`, run once both are held, removes a stale file, never another devnet's.
    fd = _lock(
        out.parent / f".{out.name}.lock",
        f"--out {out}",
        "stop it, or choose another file with --out PATH",
        unusable="cannot write there",
    )
    try:
        yield out
    finally:
        os.close(fd)


def check_writable(out: Path) -> None:
    """Raises `DevnetError` (one line, naming `out`) unless a file can be written beside `out` and `out` itself
    replaced: its folder is created when missing, and a probe file is written there and removed."""
    try:
        if out.is_dir():
            raise DevnetError(f"--out {out}: is a folder; give a file path such as {out / 'devnet.json'}")
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".probe"):
            pass
        out.unlink(missing_ok=True)  # a stale one would read as ready
    except OSError as exc:
        raise DevnetError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
