"""The leader lease of replicas sharing one PostgreSQL store: one row per (chain, coordinator) naming the replica that
acts, its epoch and when its lease ends, all in the database's clock.

Guarantees:
- At most one holder at a time: a replica takes the lease only when it is free or its end has passed (one atomic
  `INSERT ... ON CONFLICT ... WHERE`), and each taking raises the epoch.
- Fencing: the store checks the lease (holder, epoch, not ended) at the start of each of its write transactions,
  and holds the row with `FOR SHARE` until that transaction ends. A replica taking the lease over waits for a write
  of the old holder in progress to end, and no write of the old holder commits after the lease moved or ended: a
  paused or cut-off leader that wakes up cannot record, so cannot sign or send, anything (every transaction the node
  sends is committed to the store first).
- Renewal every `ttl_s / 3`; a holder that cannot renew before its lease ends has lost it (`LeaseLost`), whatever
  the reason (the database gone, a pause, another holder).
- The lease has its own connection (with TCP timeouts of a few seconds), used from a worker thread, so a database
  that stops answering never blocks the node's event loop for longer than that.

Raises `LeaseLost` (an `InferaError`) from a fenced write and from `renew` once the lease is gone.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from node.errors import InferaError

if TYPE_CHECKING:
    from prometheus_client.core import Metric

LEASE_TABLE = """
CREATE TABLE IF NOT EXISTS leases (
    name        TEXT        PRIMARY KEY,
    holder      TEXT        NOT NULL,
    epoch       BIGINT      NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    renewed_at  TIMESTAMPTZ NOT NULL
)
"""

#: libpq settings of every store connection: a dead peer is noticed in about 5 s (TCP user timeout and keepalives)
#: instead of the kernel's minutes; the server ends a session that sits in a transaction for 5 s (a leader paused or
#: cut off in the middle of a write), which frees the lease row its fence holds, so a standby's taking never waits
#: longer than that. The store's transactions are milliseconds long: they never wait on anything outside.
PG_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": 5,
    "tcp_user_timeout": 5000,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "options": "-c idle_in_transaction_session_timeout=5000",
}

#: The lease connection's own statements wait at most this long for a row lock (ms): a taking blocked by a write in
#: progress is asked again at the next poll instead of hanging its thread.
LEASE_LOCK_TIMEOUT_MS = 2000


def elapsed_s() -> float:
    """Seconds on a clock that never jumps and keeps counting while the machine is suspended (Linux's boot time;
    `time.monotonic` elsewhere): a lease judged by it is never thought to hold after a suspend."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()


class LeaseLost(InferaError):
    """This replica no longer holds the leader lease: it must stop acting (and restart as a standby)."""


@dataclass(frozen=True, slots=True)
class LeaseState:
    """The lease row as last read: who holds it, since which taking (`epoch`), and until when (database time)."""

    holder: str
    epoch: int
    expires_at: datetime
    renewed_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """JSON form for /status."""
        return {
            "holder": self.holder,
            "epoch": self.epoch,
            "expires_at": self.expires_at.isoformat(),
            "renewed_at": self.renewed_at.isoformat(),
        }


def default_replica_name() -> str:
    """`host:pid`, the replica's name when `store.replica_name` is not set."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """The leader lease `name` (one per chain and coordinator) in the database at `url`, asked for by this replica
    as `holder` (its name and a random suffix: two processes never share a holder id). `ttl_s`: how long a taking or
    renewal lasts (seconds). Call its methods from one thread at a time (the node uses a worker thread)."""

    def __init__(self, url: str, name: str, replica_name: str, ttl_s: float) -> None:
        self.url = url
        self.name = name
        self.holder = f"{replica_name}/{uuid.uuid4().hex[:8]}"
        self.ttl_s = ttl_s
        #: The epoch of this replica's taking; None while it is not the leader.
        self.epoch: int | None = None
        #: `elapsed_s()` when the last taking or renewal that worked was asked for: the lease lasts at least until
        #: `renewed_mono + ttl_s` by this process's clock, and no longer for sure.
        self.renewed_mono = 0.0
        self._conn: Any = None

    def _db(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.url, autocommit=True, **PG_TIMEOUTS)
            self._conn.execute(f"SET lock_timeout = {LEASE_LOCK_TIMEOUT_MS}")
            self._conn.execute(LEASE_TABLE)
        return self._conn

    def _call(self, sql: str, args: tuple[Any, ...]) -> Any:
        """One statement on the lease's connection. A connection found dead (the database restarted since the last
        call) is replaced and the statement sent once more (each is safe to repeat); a second failure is raised, and
        the connection dropped (the next call reconnects)."""
        import psycopg

        for attempt in (1, 2):
            reused = self._conn is not None
            try:
                return self._db().execute(sql, args)
            except psycopg.OperationalError:
                broken = self._conn is None or self._conn.broken or self._conn.closed
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if attempt == 2 or not (reused and broken):
                    raise
        raise AssertionError("unreachable")

    def try_acquire(self) -> bool:
        """Takes the lease if it is free, ended, or already this replica's (an earlier taking whose answer was lost:
        taken again, with a new epoch); returns whether this replica is now the leader. Raises
        `psycopg.OperationalError` when the database does not answer or the lease row stays locked."""
        asked = elapsed_s()
        row = self._call(
            "INSERT INTO leases (name, holder, epoch, expires_at, renewed_at)"
            " VALUES (%s, %s, 1, clock_timestamp() + make_interval(secs => %s), clock_timestamp())"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = leases.epoch + 1,"
            " expires_at = excluded.expires_at, renewed_at = excluded.renewed_at"
            " WHERE leases.expires_at < clock_timestamp() OR leases.holder = excluded.holder RETURNING epoch",
            (self.name, self.holder, self.ttl_s),
        ).fetchone()
        if row is None:
            return False
        self.epoch, self.renewed_mono = int(row[0]), asked
        return True

    def renew(self) -> None:
        """Extends this replica's lease by `ttl_s`. Raises `LeaseLost` when it has ended or moved (the epoch is
        dropped), `psycopg.OperationalError` when the database does not answer (the lease may still be held)."""
        if self.epoch is None:
            raise LeaseLost(f"replica {self.holder} is not the leader")
        asked = elapsed_s()
        changed = self._call(
            "UPDATE leases SET expires_at = clock_timestamp() + make_interval(secs => %s),"
            " renewed_at = clock_timestamp() WHERE name = %s AND holder = %s AND epoch = %s"
            " AND expires_at > clock_timestamp()",
            (self.ttl_s, self.name, self.holder, self.epoch),
        ).rowcount
        if changed != 1:
            epoch, self.epoch = self.epoch, None
            raise LeaseLost(f"the leader lease (epoch {epoch}) ended or moved to another replica: {self.read()}")
        self.renewed_mono = asked

    def held(self) -> bool:
        """Whether this replica surely still holds the lease by its own clock (taken or renewed less than `ttl_s`
        ago): false after a pause or a cut-off longer than that, before any database answer says so."""
        return self.epoch is not None and elapsed_s() - self.renewed_mono < self.ttl_s

    def release(self) -> None:
        """Ends this replica's lease now (a clean stop), so a standby takes over at its next try."""
        if self.epoch is not None:
            self._call(
                "UPDATE leases SET expires_at = clock_timestamp() WHERE name = %s AND holder = %s AND epoch = %s",
                (self.name, self.holder, self.epoch),
            )
            self.epoch = None

    def read(self) -> LeaseState | None:
        """The lease row now, or None when no replica ever took it."""
        row = self._call(
            "SELECT holder, epoch, expires_at, renewed_at FROM leases WHERE name = %s", (self.name,)
        ).fetchone()
        return None if row is None else LeaseState(str(row[0]), int(row[1]), row[2], row[3])

    def fence(self) -> tuple[str, tuple[Any, ...]]:
        """The check the store runs first in each write transaction (PostgreSQL SQL and its arguments): one row
        while this replica's lease (this epoch) has not ended, held `FOR SHARE` until the transaction ends."""
        return (
            "SELECT 1 FROM leases WHERE name = %s AND holder = %s AND epoch = %s AND expires_at > clock_timestamp()"
            " FOR SHARE",
            (self.name, self.holder, -1 if self.epoch is None else self.epoch),
        )

    def close(self) -> None:
        """Closes the lease's connection (the lease itself is left as it is: `release` ends it)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def lease_name(chain_id: int, coordinator: str) -> str:
    """The lease of the replicas serving `coordinator` on chain `chain_id`."""
    return f"node:{chain_id}:{coordinator.lower()}"


class Replica:
    """This process's part among replicas: `single` (an SQLite store: no lease), `standby` (waiting for the lease)
    or `leader`; with the lease as last read, for `/status` and `/metrics`."""

    def __init__(self, name: str, lease: Lease | None) -> None:
        self.name = name
        self.lease = lease
        self.role = "single" if lease is None else "standby"
        #: The lease row as last read (None: not read yet, or an SQLite store).
        self.state: LeaseState | None = None
        #: Why the last read or renewal failed (the database did not answer), or None.
        self.error: str | None = None

    def check_may_send(self) -> None:
        """Raises `LeaseLost` unless this process may send transactions now: a single node always may; a replica
        only while its lease surely holds (`Lease.held`). The broadcaster calls it before every send, so a paused
        leader that wakes up does not even rebroadcast what it had signed (its successor does)."""
        if self.lease is not None and not self.lease.held():
            raise LeaseLost(f"replica {self.name}: not sending: the leader lease is not surely held")

    def snapshot(self) -> dict[str, Any]:
        """JSON form for /status: name, role, the lease (holder, epoch, ISO times) and the last error."""
        return {
            "name": self.name,
            "role": self.role,
            "epoch": None if self.lease is None else self.lease.epoch,
            "lease": None if self.state is None else self.state.as_dict(),
            "lease_ttl_s": None if self.lease is None else self.lease.ttl_s,
            "error": self.error,
        }

    def collect(self) -> Iterator[Metric]:
        """`infera_replica_leader{replica}` (1 while this process leads or runs alone, else 0) and, with a lease,
        `infera_lease_expires_timestamp_seconds` and `infera_lease_epoch` as last read."""
        from prometheus_client.core import GaugeMetricFamily

        leader = GaugeMetricFamily(
            "infera_replica_leader",
            "1 while this replica acts (leader, or a single node), 0 on standby",
            labels=["replica"],
        )
        leader.add_metric([self.name], 0.0 if self.role == "standby" else 1.0)
        yield leader
        if self.state is not None:
            yield GaugeMetricFamily(
                "infera_lease_expires_timestamp_seconds",
                "when the leader lease ends unless renewed (unix s, database clock), as last read",
                value=self.state.expires_at.timestamp(),
            )
            yield GaugeMetricFamily(
                "infera_lease_epoch", "the leader lease's epoch (one per taking)", value=self.state.epoch
            )
