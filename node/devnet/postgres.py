"""A throwaway PostgreSQL cluster for tests and the HA devnet: Debian's server binaries, `initdb` into a folder of its
own, `pg_ctl` on a free port of 127.0.0.1, and everything removed after.

Guarantees:
- It never touches a cluster it did not create: its own data folder, its own port, its own socket folder.
- As root, the server runs as Debian's `postgres` user (`initdb` refuses root), on a folder handed to that user.
- `stop()`/`start()` stop and restart the same cluster (a fault test's "PostgreSQL down for 20 s"); leaving the
  `with` block stops it (fast shutdown) and removes its folder, whatever happened inside.

Raises `PostgresUnavailable` with what to install when the server binaries are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from node.devnet.processes import free_port
from node.errors import InferaError

#: Where Debian's `postgresql-15` package puts its server binaries.
PG_BIN_DIRS = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")


class PostgresUnavailable(InferaError):
    """No PostgreSQL server binaries on this machine, or the throwaway cluster would not start."""


def pg_bin_dir() -> Path:
    """The folder holding `initdb` and `pg_ctl`. Raises `PostgresUnavailable` naming the package to install."""
    for folder in PG_BIN_DIRS:
        if Path(folder, "initdb").is_file():
            return Path(folder)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresUnavailable("PostgreSQL's server is not installed: `make deps` installs Debian's postgresql")


class ThrowawayPostgres:
    """One PostgreSQL cluster on 127.0.0.1:`port` with database `infera` owned by user `infera` (trust auth on
    loopback only), in a temporary folder. `url` is its `postgresql://` address."""

    def __init__(self, parent: Path | None = None) -> None:
        self.bin = pg_bin_dir()
        self.folder = Path(tempfile.mkdtemp(prefix="infera-pg-", dir=parent))
        self.data = self.folder / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        self.url = f"postgresql://infera@127.0.0.1:{self.port}/infera"
        self._databases = 0

    def _run(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(a) for a in args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)

    def _checked(self, what: str, *args: str) -> None:
        done = self._run(*args)
        if done.returncode != 0:
            log = (self.folder / "log").read_text()[-2000:] if (self.folder / "log").exists() else ""
            raise PostgresUnavailable(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n{log}")

    def __enter__(self) -> ThrowawayPostgres:
        try:
            if self._as_postgres:
                shutil.chown(self.folder, "postgres", "postgres")
            self._checked(
                "initdb", str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "infera", "-E", "UTF8"
            )
            self.start()
            self._checked("createdb", str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                          "infera", "infera")  # fmt: skip
        except BaseException:
            self.close()
            raise
        return self

    def new_database(self) -> str:
        """Creates a new, empty database (owned by `infera`) and returns its URL."""
        import psycopg

        self._databases += 1
        name = f"infera_{self._databases}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # a name made here, not input
        return self.url.rsplit("/", 1)[0] + "/" + name

    def start(self) -> None:
        """Starts the server (again), waiting until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._checked(
            "pg_ctl start",
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w",
            "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (`fast`: ends every connection; `immediate`: as a crash would)."""
        self._checked("pg_ctl stop", str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        """Stops the server if it runs and removes the folder."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
