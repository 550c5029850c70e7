"""The store's read-only queries for people: the status page's newest jobs and the CLI's job lists (`JobStore`
inherits them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address

from node.jobs.db import Db
from node.jobs.intervals import split_job_id
from node.jobs.rows import Job, request_from_json
from node.jobs.states import JobState


class StoreQueries:
    """Queries over the store's connection `_db`, within its (chain, coordinator, manager) `_scope`."""

    _db: Db
    _scope: tuple[int, str, str]
    manager: str | None
    chain_id: int
    coordinator: str

    def _key(self, request_id: int) -> tuple[int, str, str, int]:
        """The jobs table's primary key of a job id: (chain, coordinator, request id, 0) for a request, (chain,
        manager, subscription id, interval) for an interval (`node.jobs.intervals`)."""
        split = split_job_id(request_id)
        if split is None:
            return (self.chain_id, self.coordinator, str(request_id), 0)
        return (self.chain_id, self.manager or "", str(split[0]), split[1])

    def latest(self, n: int) -> list[dict[str, Any]]:
        """The `n` newest jobs (by when their request was recorded; this chain and coordinator), newest first, each
        with its request id (a string: it may not fit a JSON number), model, state, tx hash, error, the wall times it
        was recorded and last changed, its payment `token`, and its outcome (`callback_ok`, `fee_earned`,
        `verification`); an interval's job has `subscription_id` (a string) and `interval` too (its `request_id` is
        None). Walks the table from its newest row (no index, no sort): a fraction of a millisecond however many jobs
        the store holds."""
        newest = (  # SQLite: its row ids, in insertion order; PostgreSQL: the recording time (indexed)
            ("rowid AS row, * FROM jobs NOT INDEXED", "rowid")
            if self._db.dialect == "sqlite"
            else ("created_at AS row, * FROM jobs", "created_at")
        )
        rows = self._db.execute(
            "SELECT j.request_id, j.model, j.state, j.tx_hash, j.error, j.created_at, j.updated_at, j.coordinator,"
            " j.interval, o.callback_ok, o.fee_earned, o.verification, json_extract(j.request, '$.token')"
            f" FROM (SELECT {newest[0]} WHERE chain_id=? AND coordinator IN (?,?) ORDER BY {newest[1]} DESC LIMIT ?) j"
            " LEFT JOIN outcomes o ON o.chain_id = j.chain_id AND o.coordinator = j.coordinator"
            " AND o.request_id = j.request_id AND o.interval = j.interval ORDER BY j.row DESC",
            (*self._scope, n),
        ).fetchall()
        keys = ("request_id", "model", "state", "tx_hash", "error", "created_at", "updated_at")
        found = []
        for row in rows:
            job = dict(zip(keys, row[:7], strict=True))
            job.update(callback_ok=row[9], fee_earned=row[10], verification=row[11], token=row[12])
            if self.manager is not None and row[7] == self.manager:
                job.update(request_id=None, subscription_id=row[0], interval=int(row[8]))
            found.append(job)
        return found

    def list_jobs(self, *, state: JobState | None = None, limit: int = 50) -> list[JobRecord]:
        """The newest `limit` jobs (by last change), optionally only those in `state`."""
        where, args = "chain_id=? AND coordinator IN (?,?)", list(self._scope)
        if state is not None:
            where += " AND state=?"
            args.append(state)
        rows = self._db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM jobs WHERE {where} ORDER BY updated_at DESC, block_number DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_record(r) for r in rows]

    def record(self, request_id: int) -> JobRecord | None:
        """One job as the store has it now (not the in-memory copy), or None."""
        row = self._db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM jobs WHERE chain_id=? AND coordinator=? AND request_id=? AND interval=?",
            self._key(request_id),
        ).fetchone()
        return None if row is None else _record(row)

    def senders(self) -> list[str]:
        """The addresses this node signed transactions from (as long as their records are kept)."""
        rows = self._db.execute("SELECT DISTINCT sender FROM txs WHERE chain_id=?", (self.chain_id,)).fetchall()
        return [to_checksum_address(r[0]) for r in rows]

    @staticmethod
    def _job(row: tuple[Any, ...]) -> Job:
        model, request, state, attempts, output, failure, tx_hash, nonce, error = row
        return Job(
            request=request_from_json(request),
            model_name=model,
            state=JobState(state),
            attempts=attempts,
            output=output,
            failure=failure,
            tx_hash=tx_hash,
            nonce=nonce,
            error=error,
        )


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job with the bookkeeping an operator looks at (when it was seen and last changed, where its log was)."""

    job: Job
    block_number: int
    created_at: float
    updated_at: float


_RECORD_COLUMNS = (
    "model, request, state, attempts, output, failure, tx_hash, nonce, error, block_number, created_at, updated_at"
)


def _record(row: tuple[Any, ...]) -> JobRecord:
    return JobRecord(StoreQueries._job(row[:9]), int(row[9]), float(row[10]), float(row[11]))
