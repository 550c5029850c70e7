"""The devnet's processes: finding the chain tools, starting and watching a process, waiting for it to be ready.

Guarantees: `wait_until` never sleeps past its deadline by more than one `interval_s`, and stops early when `alive`
raises (a process that died), so a test waits on a condition, never on a fixed sleep.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from node.errors import InferaError

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = ROOT / "coordinator_contract"

T = TypeVar("T")


class DevnetError(InferaError, RuntimeError):
    """A devnet step failed; the message says which and where its log is."""


def tool(name: str) -> str:
    """Path of a chain tool: the pinned one in node_modules, else one on PATH."""
    local = ROOT / "node_modules" / ".bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise DevnetError(f"{name} not found: run `npm ci` in {ROOT} (or `make deps`)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it); another process may take it before
    it is used, which a test sees as a failed start, not a wrong answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (nothing listens there; connections of a stopped server
    still closing do not count, as for anvil, which reuses the address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
    alive: Callable[[], None] | None = None,
) -> T:
    """Polls `check` until it returns a value that is not None/False; raises `TimeoutError` naming `what`.

    `alive` is called on each round and may raise to stop waiting early (a process that died).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if alive is not None:
            alive()
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def forge_build() -> None:
    """Compiles the contracts (incremental) with the pinned forge and solc-js; raises `DevnetError` with forge's
    output when it fails, or when forge is not installed."""
    result = subprocess.run(
        [tool("forge"), "build", "--quiet"], cwd=CONTRACTS_DIR, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DevnetError(f"forge build failed:\n{result.stdout}{result.stderr}")


@dataclass
class Proc:
    """A process the devnet started (anvil, a container, a node), with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def check_alive(self) -> None:
        """Returns while the process runs; once it has exited, raises `DevnetError` with its exit code and the last
        lines of its log."""
        code = self.popen.poll()
        if code is not None:
            raise DevnetError(f"{self.name} exited with code {code}; its log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` lines of the process's log ("(no log)" when it cannot be read); never raises."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def http_ok(url: str) -> bool:
    """Whether a GET of `url` answers 200 within 2 s (False for any other status, a refused connection or a
    timeout); never raises for a network failure."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def tcp_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port` (waits at most 1 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
