"""The `/v1` API's jobs in the job store: off-chain jobs and delegated requests, so that what a replica accepted is
answered by the next leader (and by the same node after a restart), for both stores.

Guarantees:
- One row per job (`kind`, id): its owner (the API token's name), model, status and a JSON record (what the API shows,
  plus an off-chain job's input, so a new leader can run it again), written when the job is accepted and at each
  change of status, in the store's transaction (fenced on PostgreSQL: a deposed leader writes none).
- A write that fails (the store gone, the lease lost) is logged, never raised into the job: the job's answer to its
  client does not depend on it.
- Finished rows older than the store's retention are deleted with `prune`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from node.jobs.rows import upsert
from node.jobs.store import JobStore

log = logging.getLogger(__name__)

API_JOBS_TABLE = """
CREATE TABLE IF NOT EXISTS api_jobs (
    kind        TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    record      TEXT    NOT NULL,
    updated_at  REAL    NOT NULL,
    PRIMARY KEY (kind, id)
)
"""
_COLUMNS = ("kind", "id", "owner", "model", "status", "record", "updated_at")

#: Statuses after which a job changes no more.
FINISHED = ("completed", "failed")


class ApiJobTable:
    """The `api_jobs` table of one store."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        store.execute(API_JOBS_TABLE)

    def save(self, kind: str, job_id: str, owner: str, model: str, status: str, record: dict[str, Any]) -> None:
        """Writes the job's row (`record`: JSON-ready); a failure is logged, not raised."""
        try:
            self._store.execute(
                upsert("api_jobs", _COLUMNS, ("kind", "id")),
                (kind, job_id, owner, model, status, json.dumps(record), time.time()),
            )
        except Exception as exc:  # the store gone or the lease lost: the job goes on; the next leader lacks this
            log.warning(
                "%s job %s: could not record its status %s (%s: %s)", kind, job_id, status, type(exc).__name__, exc
            )

    def load(self, kind: str, owner: str, job_id: str) -> dict[str, Any] | None:
        """The job's record, when `owner` owns it; None otherwise."""
        rows = self._store.execute(
            "SELECT record FROM api_jobs WHERE kind=? AND id=? AND owner=?", (kind, job_id, owner)
        )
        return dict(json.loads(rows[0][0])) if rows else None

    def unfinished(self, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(id, owner, record) of the jobs of `kind` not finished, oldest first: what a replica that stopped left."""
        rows = self._store.execute(
            f"SELECT id, owner, record FROM api_jobs WHERE kind=? AND status NOT IN ({','.join('?' * len(FINISHED))})"
            " ORDER BY updated_at",
            (kind, *FINISHED),
        )
        return [(str(r[0]), str(r[1]), dict(json.loads(r[2]))) for r in rows]

    def prune(self, retention_s: float) -> int:
        """Deletes finished rows last changed more than `retention_s` ago; returns how many."""
        before = time.time() - retention_s
        rows = self._store.execute(
            f"DELETE FROM api_jobs WHERE status IN ({','.join('?' * len(FINISHED))}) AND updated_at < ? RETURNING id",
            (*FINISHED, before),
        )
        return len(rows)
