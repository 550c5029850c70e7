"""The node's durable record: jobs, the listener's cursor and block hashes, and the transactions in flight.

States of a job: seen → running → computed → submitted → confirmed | failed | expired, plus `orphaned` for a job
whose request a reorg removed (a re-included request revives it).

Guarantees:
- SQLite in WAL mode, one commit per state change: a process killed at any point (SIGKILL included) restarts from
  the last committed state. With `synchronous=NORMAL` a power loss may roll back the last commits; the chain-side
  checks (simulation, `served`) keep that from ever causing a second delivery.
- One row per (chain, coordinator, request id, interval): a log seen twice (backfill overlap, reconnect) is one job.
- A job's output is committed before any transaction carrying it is signed, so a retry resends, never recomputes.
- A transaction is committed (raw bytes, nonce, the jobs it carries) before it is broadcast, so a crash between
  the two resends the same nonce instead of leaving a gap.
- Terminal jobs and settled transactions are pruned after `retention_s`, so the disk stays bounded.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_utils.address import to_checksum_address

from node.chain.contracts import InferenceRequest
from node.chain.subscriptions import SubscriptionEvent
from node.errors import ConfigError
from node.jobs.db import SQLITE_CACHE_KIB, Db, PostgresDb, connect, redact_url, scopes
from node.jobs.intervals import interval_job_id
from node.jobs.queries import JobRecord as JobRecord  # re-exported: the CLI reads records
from node.jobs.queries import StoreQueries
from node.jobs.rows import (
    JOB_COLUMNS,
    JOB_KEY,
    MIGRATIONS,
    SCHEMA,
    TX_COLUMNS,
    request_from_json,
    request_to_json,
    upsert,
)
from node.jobs.rows import SCHEMA_VERSION as SCHEMA_VERSION  # re-exported: the CLI and tests read it here
from node.jobs.rows import Job as Job  # re-exported: the store's callers work on Jobs
from node.jobs.rows import StoredTx as StoredTx
from node.jobs.states import RESUMABLE, TERMINAL, check, check_revival
from node.jobs.states import JobState as JobState  # re-exported: a Job carries one
from node.jobs.subtable import SubscriptionTable

if TYPE_CHECKING:
    from node.jobs.lease import Lease

log = logging.getLogger(__name__)


#: SQLite's page cache, in KiB (its default is 2,000). The node reads and writes the newest jobs, whose pages stay in
#: this cache; older pages come from the OS's file cache when a restart resumes them. With the default the cache was
#: 2 MB of the node's resident memory after its first large block of requests, for no measurable speed.
CACHE_KIB = SQLITE_CACHE_KIB


class JobStore(StoreQueries):
    """Jobs, cursor, block hashes and transactions of one (chain, coordinator), in one SQLite file or a PostgreSQL
    database (node/jobs/db.py) that replicas share."""

    def __init__(
        self, path: str | Path, *, chain_id: int, coordinator: str, subscription_manager: str | None = None
    ) -> None:
        """Opens (creating or migrating) the store at `path` (a file, or a `postgresql://` URL) for jobs of
        `coordinator` and, when given, of the intervals of `subscription_manager`'s subscriptions (their rows carry the
        manager's address). Raises `ConfigError` for a store a newer Infera wrote, or a database it cannot reach."""
        self.path = str(path)
        self.chain_id = chain_id
        self.coordinator = coordinator.lower()
        self.manager = subscription_manager.lower() if subscription_manager else None
        #: `chain_id=? AND coordinator IN (?,?)` arguments: this node's one-off requests and subscription intervals.
        self._scope = (chain_id, self.coordinator, self.manager or self.coordinator)
        self._db: Db = connect(self.path)
        found = self._db.schema_version()
        if found <= SCHEMA_VERSION:  # an older store is migrated step by step (a replica may do it first)
            found = self._db.migrate(SCHEMA_VERSION, MIGRATIONS, SCHEMA)
        if found > SCHEMA_VERSION:
            self._db.close()
            raise ConfigError(
                f"store.path: {self.where} was written by a newer Infera (store version {found}, this one reads up to"
                f" {SCHEMA_VERSION}); upgrade Infera, or start from the backup you took before upgrading"
            )
        if 0 < found < SCHEMA_VERSION:
            log.info("store %s migrated from version %d to %d", self.where, found, SCHEMA_VERSION)
        #: The subscriptions this node follows (same file, same transactions).
        self.subscriptions = SubscriptionTable(self._db, chain_id, self.manager)
        #: Live jobs by request id (the rows not yet terminal), so hot paths do not read back what they wrote.
        self._live: dict[int, Job] = {}
        #: Every hash of the kept transactions that carry no job (this node's `deliverDelegated` calls and nonce
        #: fills): a `RequestCreated` in one of them was delivered by its own transaction, not a job to serve.
        self.call_hashes: set[str] = self.call_tx_hashes()
        #: Requests seen again (backfill overlap, reconnects) and dropped by `record_requests`.
        self.duplicates = 0
        #: Jobs this process moved to a final state, by state (`infera_jobs_finished_total`).
        self.finished: collections.Counter[str] = collections.Counter()
        #: Fees first recorded by this process, by payment token (`infera_fees_earned_total`; node.jobs.outcomes).
        self.earned: collections.Counter[str] = collections.Counter()

    @property
    def scope(self) -> tuple[int, str, str]:
        """(chain id, coordinator, manager or coordinator): the `chain_id=? AND coordinator IN (?,?)` arguments of
        this store's rows (lower-case addresses)."""
        return self._scope

    @property
    def where(self) -> str:
        """The store's location for messages: its file, or its database URL without the password."""
        return redact_url(self.path)

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._db.dialect

    def close(self) -> None:
        self._db.close()

    def fence_with(self, lease: Lease) -> None:
        """From now on every write checks `lease` first and raises `LeaseLost`, writing nothing, once this replica
        no longer holds it (node/jobs/lease.py). Raises `ConfigError` for an SQLite store (one node, no lease)."""
        if not isinstance(self._db, PostgresDb):
            raise ConfigError("store.url: only a PostgreSQL store is shared by replicas under a lease")
        self._db.fence = lease.fence

    @contextmanager
    def transaction(self) -> Iterator[Db]:
        """Groups writes into one atomic commit."""
        with self._db.transaction():
            yield self._db

    def key(self, request_id: int) -> tuple[int, str, str, int]:
        """The jobs table's primary key (chain, coordinator or manager, request or subscription id, interval) of job
        `request_id`: how a companion table (node/jobs/stages.py) keys its rows so `prune` finds them."""
        return self._key(request_id)

    # ------------------------------------------------------------------------------------------------- jobs

    def record_requests(
        self,
        requests: Sequence[tuple[InferenceRequest | SubscriptionEvent, str]],
        *,
        cursor: int | None = None,
        hashes: Iterable[tuple[int, str]] = (),
        keep: int = 256,
    ) -> list[Job]:
        """The listener's hand-off, in ONE commit: a job row for each (request, model name) not seen before, and,
        when given, the cursor (`cursor`: the next block to read; every request below it is in `requests` or was
        recorded earlier) and the block hashes seen (only the newest `keep` are kept). Whatever the process dies of,
        either all of it is stored or none, so a request whose block the cursor passed always has a job row.

        Drops duplicates (`duplicates` counts them) and the requests this node created itself with a delegated
        `deliverDelegated` (already delivered: their transaction carries no job; `call_hashes`). Subscription logs in
        `requests` go to `subscriptions` in the same commit. Returns the new jobs, in order, for the scheduler."""
        jobs: list[Job] = []
        with self.transaction():
            for request, model_name in requests:
                if not isinstance(request, InferenceRequest):
                    self.subscriptions.record(request)
                    continue
                if request.tx_hash.lower() in self.call_hashes:
                    log.info("request %d: created and delivered by this node (a delegated request)", request.request_id)
                    continue
                try:
                    job = self.add(request, model_name)
                except (ValueError, TypeError, OverflowError):  # a request with values no row can hold: dropped alone
                    log.exception("request %s: could not be recorded; dropped", request.request_id)
                    continue  # (an SQLite error propagates: nothing of the range is committed, the cursor stays)
                if job is None:
                    self.duplicates += 1
                    log.debug("request %d: seen again; dropped as a duplicate", request.request_id)
                else:
                    jobs.append(job)
            if cursor is not None:
                self._save_progress(cursor, hashes, keep)
        return jobs

    def add(self, request: InferenceRequest, model_name: str) -> Job | None:
        """Records a new job; returns None if this request already has one (a duplicate log).

        A job orphaned by a reorg is revived when its request is seen again; its output is kept only if the
        re-included request asks for the same thing.
        """
        now = time.time()
        row = self._db.execute(
            "SELECT state, request, output FROM jobs WHERE chain_id=? AND coordinator=? AND request_id=?"
            " AND interval=?",
            self._key(request.request_id),
        ).fetchone()
        output: bytes | None = None
        if row is not None:
            if row[0] != JobState.ORPHANED:
                return None
            old = request_from_json(row[1])
            same = (old.model_id, old.consumer, old.input) == (request.model_id, request.consumer, request.input)
            output = row[2] if same else None
        state = JobState.COMPUTED if output is not None else JobState.SEEN
        if row is not None:
            check_revival(request.request_id, JobState(row[0]), state)
        self._db.execute(
            upsert("jobs", JOB_COLUMNS, JOB_KEY),
            (
                *self._key(request.request_id),
                model_name,
                request_to_json(request),
                request.block_number,
                request.block_hash,
                state,
                0,
                output,
                None,
                None,
                None,
                None,
                now,
                now,
            ),
        )
        job = Job(request=request, model_name=model_name, state=state, output=output)
        self._live[request.request_id] = job
        return job

    def get(self, request_id: int) -> Job | None:
        live = self._live.get(request_id)
        if live is not None:
            return live
        row = self._db.execute(
            "SELECT model, request, state, attempts, output, failure, tx_hash, nonce, error FROM jobs"
            " WHERE chain_id=? AND coordinator=? AND request_id=? AND interval=?",
            self._key(request_id),
        ).fetchone()
        return None if row is None else self._job(row)

    def resumable(self) -> list[Job]:
        """Jobs a restarted node must carry on with (not yet handed to a transaction), oldest first."""
        rows = self._db.execute(
            "SELECT model, request, state, attempts, output, failure, tx_hash, nonce, error FROM jobs"
            " WHERE chain_id=? AND coordinator IN (?,?) AND state IN (?,?,?) ORDER BY block_number, request_id",
            (*self._scope, *RESUMABLE),
        ).fetchall()
        jobs = [self._job(r) for r in rows]
        for job in jobs:
            self._live[job.request_id] = job
        return jobs

    def update(self, job: Job, state: JobState, **fields: Any) -> None:
        """Moves `job` to `state`, setting `fields` (attempts, output, failure, tx_hash, nonce, error) in the
        same commit. Raises `IllegalTransition` (nothing written) for a move `states.TRANSITIONS` does not allow."""
        check(job.request_id, job.state, state)
        if state in TERMINAL and job.state not in TERMINAL:
            self.finished[state] += 1
        for name, value in fields.items():
            setattr(job, name, value)
        job.state = state
        self._write(job)
        if state in TERMINAL:
            self._live.pop(job.request_id, None)
        else:
            self._live[job.request_id] = job

    def _write(self, job: Job) -> None:
        for name in ("failure", "error"):  # text from outside (a container, an RPC): lone surrogates cannot be stored
            value = getattr(job, name)
            if value is not None:
                setattr(job, name, value.encode("utf-8", "replace").decode("utf-8"))
        self._db.execute(
            "UPDATE jobs SET state=?, attempts=?, output=?, failure=?, tx_hash=?, nonce=?, error=?, updated_at=?"
            " WHERE chain_id=? AND coordinator=? AND request_id=? AND interval=?",
            (
                job.state,
                job.attempts,
                job.output,
                job.failure,
                job.tx_hash,
                job.nonce,
                job.error,
                time.time(),
                *self._key(job.request_id),
            ),
        )

    def orphan_from(self, block_number: int) -> list[int]:
        """Marks every job whose request log was in a block at or above `block_number` (a reorg's fork: every such
        block was replaced) as orphaned; returns their request ids."""
        rows = self._db.execute(
            "SELECT request_id, interval, coordinator, state FROM jobs WHERE chain_id=? AND coordinator IN (?,?)"
            " AND block_number >= ? AND state != ?",
            (*self._scope, block_number, JobState.ORPHANED),
        ).fetchall()
        orphaned = [self._job_id(r[0], r[1], r[2]) for r in rows]
        for rid, row in zip(orphaned, rows, strict=True):
            check(rid, JobState(row[3]), JobState.ORPHANED)
        with self.transaction() as db:
            self.subscriptions.forget_from(block_number)  # their logs are read again on the new branch
            for rid, row in zip(orphaned, rows, strict=True):
                db.execute(
                    "UPDATE jobs SET state=?, error=?, updated_at=? WHERE chain_id=? AND coordinator=?"
                    " AND request_id=? AND interval=?",
                    (JobState.ORPHANED, "request removed by a reorg", time.time(), *self._key(rid)),
                )
                live = self._live.pop(rid, None)
                if live is not None:
                    live.state = JobState.ORPHANED
                if JobState(row[3]) not in TERMINAL:
                    self.finished[JobState.ORPHANED] += 1
        return orphaned

    def _job_id(self, request_id: str, interval: int, coordinator: str) -> int:
        """The job id of a row (`_key`'s inverse)."""
        if self.manager is not None and coordinator == self.manager:
            return interval_job_id(int(request_id), int(interval))
        return int(request_id)

    def last_interval(self, subscription_id: int) -> int | None:
        """The newest interval of the subscription with a job row (any state), or None."""
        row = self._db.execute(
            "SELECT MAX(interval) FROM jobs WHERE chain_id=? AND coordinator=? AND request_id=?",
            (self.chain_id, self.manager or "", str(subscription_id)),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def counts(self) -> dict[str, int]:
        """Jobs by state (this chain, coordinator and subscription manager)."""
        rows = self._db.execute(
            "SELECT state, COUNT(*) FROM jobs WHERE chain_id=? AND coordinator IN (?,?) GROUP BY state", self._scope
        ).fetchall()
        return {state: int(n) for state, n in rows}

    # ------------------------------------------------------------------------------------- cursor and blocks

    def cursor(self, default: int) -> int:
        """The next block the listener has to read logs from."""
        row = self._db.execute(
            "SELECT next_block FROM cursors WHERE chain_id=? AND coordinator=?", (self.chain_id, self.coordinator)
        ).fetchone()
        return default if row is None else max(int(row[0]), default)

    def set_cursor(self, next_block: int) -> None:
        self._db.execute(
            "INSERT INTO cursors (chain_id, coordinator, next_block) VALUES (?,?,?)"
            " ON CONFLICT (chain_id, coordinator) DO UPDATE SET next_block=excluded.next_block",
            (self.chain_id, self.coordinator, next_block),
        )

    def _save_progress(self, next_block: int, hashes: Iterable[tuple[int, str]], keep: int) -> None:
        """The listener's cursor and the block hashes seen since the last call (for reorg detection after a
        restart), inside the caller's transaction (`record`); only the newest `keep` hashes are kept."""
        self.set_cursor(next_block)
        top = 0
        for number, block_hash in hashes:
            self._db.execute(
                upsert("blocks", ("chain_id", "number", "hash"), ("chain_id", "number")),
                (self.chain_id, number, block_hash),
            )
            top = max(top, number)
        if top:
            self._db.execute("DELETE FROM blocks WHERE chain_id=? AND number <= ?", (self.chain_id, top - keep))

    def blocks(self) -> dict[int, str]:
        rows = self._db.execute("SELECT number, hash FROM blocks WHERE chain_id=?", (self.chain_id,)).fetchall()
        return {int(n): str(h) for n, h in rows}

    def forget_blocks_from(self, number: int) -> None:
        self._db.execute("DELETE FROM blocks WHERE chain_id=? AND number >= ?", (self.chain_id, number))

    # -------------------------------------------------------------------------------------------------- txs

    def add_tx(self, tx: StoredTx, jobs: list[Job]) -> None:
        """Records a signed transaction and moves the jobs it carries to `submitted`, in one commit."""
        now = time.time()
        with self.transaction() as db:
            db.execute(
                upsert("txs", TX_COLUMNS, ("chain_id", "sender", "nonce")),
                (
                    self.chain_id,
                    tx.sender.lower(),
                    tx.nonce,
                    self.coordinator,
                    json.dumps(tx.hashes),
                    tx.raw,
                    json.dumps(tx.request),
                    json.dumps([[str(rid), failed] for rid, failed in tx.items]),
                    tx.sent_block,
                    tx.mined_block,
                    tx.state,
                    now,
                ),
            )
            if not tx.items:
                self.call_hashes.update(h.lower() for h in tx.hashes)
            for job in jobs:
                check(job.request_id, job.state, JobState.SUBMITTED)
                job.state, job.tx_hash, job.nonce = JobState.SUBMITTED, tx.hashes[-1], tx.nonce
                self._write(job)

    def update_tx(self, tx: StoredTx) -> None:
        """Writes a transaction's new hashes (a replacement), raw bytes, request, the jobs it carries (a replacement
        may carry fewer, a nonce fill none), blocks and state."""
        if not tx.items:
            self.call_hashes.update(h.lower() for h in tx.hashes)
        self._db.execute(
            "UPDATE txs SET hashes=?, raw=?, request=?, items=?, sent_block=?, mined_block=?, state=?, updated_at=?"
            " WHERE chain_id=? AND sender=? AND nonce=?",
            (
                json.dumps(tx.hashes),
                tx.raw,
                json.dumps(tx.request),
                json.dumps([[str(rid), failed] for rid, failed in tx.items]),
                tx.sent_block,
                tx.mined_block,
                tx.state,
                time.time(),
                self.chain_id,
                tx.sender.lower(),
                tx.nonce,
            ),
        )

    def call_tx_hashes(self) -> set[str]:
        """Every hash (replacements included) of the kept transactions that carry no job: the node's own
        `deliverDelegated` calls, whose `RequestCreated` it must not serve again after a restart."""
        rows = self._db.execute("SELECT hashes FROM txs WHERE chain_id=? AND items='[]'", (self.chain_id,)).fetchall()
        return {h.lower() for (hashes,) in rows for h in json.loads(hashes)}

    def open_txs(self, sender: str) -> list[StoredTx]:
        """The sender's transactions not yet final (pending, or mined but not yet confirmed), by nonce."""
        rows = self._db.execute(
            "SELECT sender, nonce, hashes, raw, request, items, sent_block, state, mined_block FROM txs"
            " WHERE chain_id=? AND sender=? AND state IN ('pending', 'mined') ORDER BY nonce",
            (self.chain_id, sender.lower()),
        ).fetchall()
        return [
            StoredTx(
                sender=to_checksum_address(r[0]),
                nonce=int(r[1]),
                hashes=list(json.loads(r[2])),
                raw=bytes(r[3]),
                request=dict(json.loads(r[4])),
                items=[(int(rid), bool(failed)) for rid, failed in json.loads(r[5])],
                sent_block=int(r[6]),
                state=str(r[7]),
                mined_block=None if r[8] is None else int(r[8]),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------------------------------------ upkeep

    def prune(self, retention_s: float) -> int:
        """Deletes terminal jobs whose last change and request deadline are both older than `retention_s` (a job is
        kept until its deadline passed, so the node can still end its request: `node.chain.reclaim`), their outcome
        rows, proofs and pipeline stage outputs, and final transactions older than that; returns the jobs deleted."""
        before = time.time() - retention_s
        with self.transaction() as db:
            deleted = db.execute(
                f"DELETE FROM jobs WHERE state IN ({','.join('?' * len(TERMINAL))}) AND updated_at < ?"
                " AND CAST(json_extract(request, '$.deadline') AS INTEGER) < ?",
                (*TERMINAL, before, before),
            ).rowcount
            db.execute(
                "DELETE FROM outcomes WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.chain_id = outcomes.chain_id AND"
                " j.coordinator = outcomes.coordinator AND j.request_id = outcomes.request_id"
                " AND j.interval = outcomes.interval)"
            )
            db.execute("DELETE FROM txs WHERE state IN ('confirmed', 'failed') AND updated_at < ?", (before,))
            # Companion tables, where a node made them (`node.jobs.verification.Proofs`, `node.jobs.stages`).
            present = db.tables()
            if "api_jobs" in present:  # the /v1 API's finished jobs (node/jobs/apijobs.py)
                db.execute("DELETE FROM api_jobs WHERE updated_at < ?", (before,))  # finished or abandoned
            for table in ("proofs", "pipeline_stages"):
                if table in present:
                    db.execute(
                        f"DELETE FROM {table} WHERE NOT EXISTS (SELECT 1 FROM jobs j"
                        f" WHERE j.chain_id = {table}.chain_id AND j.coordinator = {table}.coordinator"
                        f" AND j.request_id = {table}.request_id AND j.interval = {table}.interval)"
                    )
        return int(deleted)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Runs one statement on the store's connection (inside `transaction()` when the caller opened one) and
        returns its rows: for the store's companions (`node.jobs.outcomes`) that keep their own table here."""
        cursor = self._db.execute(sql, tuple(args))
        return cursor.fetchall() if cursor.description is not None else []

    # --------------------------------------------------------------------------------- operator queries (CLI)

    def requeue(self, request_id: int) -> JobState:
        """Puts a `failed` or `skipped` job back so the node works on it again when it next starts (`resumable`):
        to `computed` if it has an output or a failure to report (resent, not recomputed), else to `seen` with its
        attempts reset (a skipped job is judged by the fee policy again). The state is re-read inside the write, so a
        job a running node settled meanwhile is never overwritten; raises `ValueError` if the job is missing or
        neither failed nor skipped. Returns the new state."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT state, output, failure FROM jobs WHERE chain_id=? AND coordinator=? AND request_id=?"
                " AND interval=?",
                self._key(request_id),
            ).fetchone()
            if row is None:
                raise ValueError(f"no job for request {request_id}")
            if row[0] not in (JobState.FAILED, JobState.SKIPPED):
                raise ValueError(f"job {request_id} is {row[0]}, not failed or skipped")
            state = JobState.COMPUTED if row[1] is not None or row[2] is not None else JobState.SEEN
            check(request_id, JobState(row[0]), state)
            db.execute(
                "UPDATE jobs SET state=?, attempts=CASE WHEN ?='seen' THEN 0 ELSE attempts END, tx_hash=NULL,"
                " nonce=NULL, error=NULL, updated_at=? WHERE chain_id=? AND coordinator=? AND request_id=?"
                " AND interval=?",
                (state, state, time.time(), *self._key(request_id)),
            )
        self._live.pop(request_id, None)
        return state

    @staticmethod
    def scopes(location: str | Path) -> list[tuple[int, str]]:
        """The (chain id, coordinator) pairs with jobs in the store at `location` (`node.jobs.db.scopes`)."""
        return scopes(str(location))
