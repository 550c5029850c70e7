"""The store's database connection, SQLite (embedded, the default) or PostgreSQL (shared by replicas): one small
interface, so the job store's SQL is written once.

The store's SQL is SQLite's dialect restricted to what PostgreSQL also runs (`INSERT ... ON CONFLICT`, `?`
parameters, `json_extract`), and `PostgresDb` maps the rest once per statement (cached):
- `?` parameters become psycopg's `%s` (a literal `%` is doubled);
- `CAST(... AS INTEGER)` becomes `CAST(... AS NUMERIC)`: SQLite's INTEGER is 64-bit, PostgreSQL's is 32-bit, and a
  request's deadline is a uint64;
- in `CREATE TABLE`: INTEGER → BIGINT, REAL → DOUBLE PRECISION, BLOB → BYTEA;
- `json_extract(text, '$.key')` is a SQL function the PostgreSQL schema defines (text in, text out).
An integer parameter outside int64 raises `OverflowError`, as SQLite's binding does, before anything reaches the
server: the store drops such a request alone instead of aborting the transaction it is part of.

Schema versions: SQLite keeps the version in `PRAGMA user_version`; PostgreSQL in a one-row `infera_schema` table,
changed only under a transaction-scoped advisory lock, so replicas starting together migrate once. Both run the same
numbered steps (`node.jobs.rows.MIGRATIONS`). A migration tool (Alembic, yoyo) was not taken: it would need a second
copy of every step in its own format for the SQLite files that already exist, for the same two-line loop.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from node.errors import ConfigError

#: `PRAGMA cache_size` of the SQLite store, in KiB (SQLite's default is 2,000): see node/jobs/store.py.
SQLITE_CACHE_KIB = 512

#: The advisory lock key (any int8) the PostgreSQL store takes while it creates or migrates its tables.
SCHEMA_LOCK = 0x1AFE7A_5C4E


class Cursor(Protocol):
    """What a statement returns: rows and the number of rows a write changed."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed."""
        ...

    @property
    def description(self) -> Any:
        """The result's columns; None for a statement without rows."""
        ...

    def fetchone(self) -> Any:
        """The next row, or None."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        ...


def is_postgres_url(location: str) -> bool:
    """Whether a store location is a PostgreSQL URL (`postgresql://` or `postgres://`) rather than a file path."""
    return location.startswith(("postgresql://", "postgres://"))


class Db(Protocol):
    """One connection of the store: statements outside `transaction()` commit one by one."""

    dialect: str

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        """Runs one statement of the store's SQL (`?` parameters)."""
        ...

    def script(self, sql: str) -> None:
        """Runs several statements without parameters (DDL)."""
        ...

    def transaction(self) -> Any:
        """A context manager: one atomic commit."""
        ...

    def schema_version(self) -> int:
        """The layout version the store was last written with (0: new)."""
        ...

    def migrate(self, version: int, steps: dict[int, str], schema: str) -> int:
        """Brings the store to `version`; returns the version found."""
        ...

    def tables(self) -> set[str]:
        """The store's table names."""
        ...

    def close(self) -> None:
        """Closes the connection."""
        ...


class SqliteDb:
    """The embedded store: one SQLite file in WAL mode, `synchronous=NORMAL`, a 5 s busy timeout."""

    dialect = "sqlite"

    def __init__(self, path: str, *, existing: bool = False) -> None:
        """Opens (creating unless `existing`) the file at `path`; raises `sqlite3.OperationalError` for an
        `existing` one that is missing."""
        if existing:
            self.conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=rw", uri=True, isolation_level=None)
            return
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")

    @classmethod
    def existing(cls, path: str) -> SqliteDb:
        """The file at `path`, which must exist, opened as it is (no pragma written)."""
        return cls(path, existing=True)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        """Runs one statement (`?` parameters)."""
        return self.conn.execute(sql, tuple(args))

    def script(self, sql: str) -> None:
        """Runs several statements without parameters (DDL)."""
        self.conn.executescript(sql)

    @contextmanager
    def transaction(self) -> Iterator[SqliteDb]:
        """One atomic commit (`BEGIN IMMEDIATE`: the write lock is taken at once)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def schema_version(self) -> int:
        """The version the file was last written with; 0 for a new file."""
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, version: int, steps: dict[int, str], schema: str) -> int:
        """Brings the file to `version`: each step of `steps` from its version on, one transaction each, then
        `schema` (idempotent DDL). Returns the version found (0: a new file)."""
        found = self.schema_version()
        for step in range(found, version) if found else ():
            self.conn.executescript(f"BEGIN IMMEDIATE; {steps[step]} PRAGMA user_version={step + 1}; COMMIT;")
        self.conn.executescript(schema)
        if found < version:
            self.conn.execute(f"PRAGMA user_version={version}")
        return found

    def tables(self) -> set[str]:
        """The names of the file's tables."""
        return {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def close(self) -> None:
        """Closes the connection."""
        self.conn.close()


#: PostgreSQL's `json_extract` for the store's `json_extract(column, '$.key')` (one level of keys and dots).
PG_FUNCTIONS = """
CREATE OR REPLACE FUNCTION json_extract(doc TEXT, path TEXT) RETURNS TEXT
    LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT doc::jsonb #>> string_to_array(substr(path, 3), '.') $$;
CREATE TABLE IF NOT EXISTS infera_schema (version BIGINT NOT NULL);
"""

#: Indexes only PostgreSQL needs: `JobStore.latest` walks SQLite's row ids, PostgreSQL's recording times.
PG_INDEXES = "CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (chain_id, created_at);"

_DDL_TYPES = ((re.compile(r"\bINTEGER\b"), "BIGINT"), (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
              (re.compile(r"\bBLOB\b"), "BYTEA"))  # fmt: skip
_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "CREATE", "ALTER ", "DROP T"})
_CAST_INTEGER = re.compile(r"\bAS INTEGER\)")
INT64 = range(-(2**63), 2**63)


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """A statement of the store's SQL as PostgreSQL (through psycopg) runs it (see the module's docstring)."""
    out = sql.replace("%", "%%").replace("?", "%s")
    out = _CAST_INTEGER.sub("AS NUMERIC)", out)
    if "CREATE TABLE" in out:
        for pattern, name in _DDL_TYPES:
            out = pattern.sub(name, out)
    return out


def _checked_args(args: Sequence[Any]) -> tuple[Any, ...]:
    """The parameters as SQLite would store them: a bool as 0 or 1, an int outside int64 refused (OverflowError)."""
    out = []
    for value in args:
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, int) and value not in INT64:
            raise OverflowError("Python int too large to convert to a 64-bit SQL integer")
        out.append(value)
    return tuple(out)


class PostgresDb:
    """The shared store: one psycopg 3 connection in autocommit mode (statements outside `transaction()` commit one
    by one, as SQLite's do). Raises `ConfigError` naming the URL (without its password) when it cannot connect."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg

        from node.jobs.lease import PG_TIMEOUTS

        self.url = url
        try:
            self.conn = psycopg.connect(url, autocommit=True, **PG_TIMEOUTS)
        except psycopg.OperationalError as exc:
            raise ConfigError(f"store.url: cannot connect to {redact_url(url)}: {str(exc).strip()}") from None
        self._depth = 0
        #: The leader lease's check (`node.jobs.lease.Lease.fence`), run first in every write transaction once set.
        self.fence: Callable[[], tuple[str, tuple[Any, ...]]] | None = None

    def _live(self) -> Any:
        """The connection, opened again when the last one broke (the database restarted, the network dropped).
        Inside a transaction a broken connection is never replaced: what the transaction wrote is gone with it, so
        the error stands (and a new connection would run the rest unfenced, outside any transaction)."""
        if self.conn.broken or self.conn.closed:
            import psycopg

            from node.jobs.lease import PG_TIMEOUTS

            if self._depth > 0:
                raise psycopg.OperationalError("the store's connection broke in the middle of a transaction")
            self.conn = psycopg.connect(self.url, autocommit=True, **PG_TIMEOUTS)
        return self.conn

    def _first_try(self, run: Callable[[], Any]) -> Any:
        """`run()`, once more on a new connection when it failed because the connection had died while idle (the
        database restarted since the last statement): nothing of it reached the database, so it is safe to repeat.
        Any other failure, or a second one, is raised."""
        import psycopg

        try:
            return run()
        except psycopg.OperationalError:
            if self._depth > 0 or not (self.conn.broken or self.conn.closed):
                raise
            return run()  # `_live` opens a new connection

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        """Runs one statement (`?` parameters); a write outside `transaction()` runs in one of its own, fenced."""
        if self.fence is not None and self._depth == 0 and sql.lstrip()[:6].upper() in _WRITES:
            with self.transaction():
                return self.execute(sql, args)
        statement, values = pg_sql(sql), _checked_args(args)
        if self._depth > 0:
            cursor: Cursor = self._live().execute(statement, values)
            return cursor
        return self._first_try(lambda: self._live().execute(statement, values))  # type: ignore[no-any-return]

    def script(self, sql: str) -> None:
        """Runs several statements without parameters (DDL)."""
        self._live().execute(pg_sql(sql).replace("%%", "%"))

    @contextmanager
    def transaction(self) -> Iterator[PostgresDb]:
        """One atomic commit (a savepoint when nested). With a `fence`, the outermost one first checks the leader
        lease and raises `LeaseLost` (writing nothing) when this replica no longer holds it."""
        begun = self._first_try(self._begin) if self._depth == 0 else self._begin()  # BEGIN: nothing sent yet
        self._depth += 1
        try:
            if self.fence is not None and self._depth == 1:
                from node.jobs.lease import LeaseLost

                check, args = self.fence()
                if self.conn.execute(check, args).fetchone() is None:
                    raise LeaseLost("this replica's leader lease has ended: nothing written")
            yield self
        except BaseException as exc:
            self._depth -= 1
            if not begun.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            self._depth -= 1
            begun.__exit__(None, None, None)

    def _begin(self) -> Any:
        """psycopg's transaction (or savepoint), entered: its BEGIN (or SAVEPOINT) sent."""
        begun = self._live().transaction()
        begun.__enter__()
        return begun

    def schema_version(self) -> int:
        """The version the database was last written with; 0 for a new database."""
        tables = self.tables()
        if "infera_schema" not in tables:
            return 0
        row = self.conn.execute("SELECT version FROM infera_schema").fetchone()
        return int(row[0]) if row else 0

    def migrate(self, version: int, steps: dict[int, str], schema: str) -> int:
        """As `SqliteDb.migrate`, in one transaction under an advisory lock (replicas starting together)."""
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            found = self.schema_version()
            if found > version:
                return found
            self.script(PG_FUNCTIONS)
            for step in range(found, version) if found else ():
                self.script(steps[step])
            self.script(schema)
            self.script(PG_INDEXES)
            self.conn.execute("DELETE FROM infera_schema")
            self.conn.execute("INSERT INTO infera_schema (version) VALUES (%s)", (version,))
        return found

    def tables(self) -> set[str]:
        """The names of the tables in the connection's schema."""
        rows = self.conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()
        return {r[0] for r in rows}

    def close(self) -> None:
        """Closes the connection."""
        self.conn.close()

    def __del__(self) -> None:  # as an sqlite3 connection does: a store dropped without close() closes on collection
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()


def redact_url(url: str) -> str:
    """A database URL without its password (`postgresql://user:***@host/db`)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def connect(location: str) -> SqliteDb | PostgresDb:
    """The store's connection: PostgreSQL for a `postgresql://` URL, else the SQLite file at `location`."""
    return PostgresDb(location) if is_postgres_url(location) else SqliteDb(location)


def scopes(location: str) -> list[tuple[int, str]]:
    """The (chain id, coordinator) pairs with jobs in the store at `location` (an SQLite file, which must exist, or a
    PostgreSQL URL; nothing is written): how a CLI opens a node's store without asking the chain for its id."""
    db: SqliteDb | PostgresDb = PostgresDb(location) if is_postgres_url(location) else SqliteDb.existing(location)
    try:
        if "jobs" not in db.tables():  # a file or database without the jobs table
            return []
        rows = db.execute("SELECT DISTINCT chain_id, coordinator FROM jobs ORDER BY chain_id").fetchall()
    finally:
        db.close()
    return [(int(c), str(a)) for c, a in rows]


def is_store_outage(exc: BaseException) -> bool:
    """Whether `exc` says the store could not be written, rather than anything about the job: this replica's lease
    ended (`LeaseLost`), or the PostgreSQL connection failed. A job that meets one is left as the store has it, for
    the next run or leader to resume, never marked failed for it."""
    from node.jobs.lease import LeaseLost

    if isinstance(exc, LeaseLost):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.OperationalError)
