"""The finished stages of pipeline jobs (node/dispatch/pipeline.py), kept so that a restarted job resumes after them.

Guarantees:
- a stage's output and the job's attempts reset to 0 (the attempts column counts the running stage's attempts) are
  one commit (`record`), so a restart resumes at the next stage with its true attempts, and no finished stage is
  computed twice;
- outputs are tied to what produced them (`basis`: the pipeline's stage names and the job's input): a job whose
  request changed (a reorg re-included another input under its id) or whose pipeline was reconfigured between runs
  starts again from its first stage, never from another chain's outputs;
- rows live in the store's `pipeline_stages` table (the store's SQLite file, keyed as its jobs; created if missing,
  so an older store gains it without a version change); they go when the job's output is recorded (`clear`) or,
  at the latest, with the job when the store prunes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from node.jobs.rows import upsert
from node.jobs.store import Job, JobState, JobStore

STAGES_TABLE = """
CREATE TABLE IF NOT EXISTS pipeline_stages (
    chain_id     INTEGER NOT NULL,
    coordinator  TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,
    interval     INTEGER NOT NULL DEFAULT 0,
    stage        INTEGER NOT NULL,
    basis        BLOB    NOT NULL,
    output       BLOB    NOT NULL,
    PRIMARY KEY (chain_id, coordinator, request_id, interval, stage)
)
"""
STAGE_COLUMNS = ("chain_id", "coordinator", "request_id", "interval", "stage", "basis", "output")


def basis(stages: Sequence[str], input_: bytes) -> bytes:
    """The digest (32 bytes) a stage output is tied to: the pipeline's stage names, in order, and the job's input."""
    digest = hashlib.sha256()
    for name in stages:
        digest.update(name.encode() + b"\x00")
    digest.update(b"\x00" + input_)
    return digest.digest()


class StageOutputs:
    """Reads and writes the `pipeline_stages` table of one store."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        store.execute(STAGES_TABLE)

    def done(self, job: Job, stages: Sequence[str]) -> list[bytes]:
        """The outputs of `job`'s finished stages, in order, for a pipeline of `stages` (model names): the first
        stages with a row tied to this pipeline and input, up to the first without one; empty when none."""
        rows = self._store.execute(
            "SELECT stage, basis, output FROM pipeline_stages WHERE chain_id=? AND coordinator=? AND request_id=?"
            " AND interval=? ORDER BY stage",
            self._store.key(job.request_id),
        )
        tied = basis(stages, job.request.input)
        outputs: list[bytes] = []
        for stage, row_basis, output in rows:
            if stage != len(outputs) or bytes(row_basis) != tied or len(outputs) == len(stages) - 1:
                break
            outputs.append(bytes(output))
        return outputs

    def record(self, job: Job, stage: int, output: bytes, stages: Sequence[str]) -> None:
        """Keeps `output` (bytes) of `job`'s stage `stage` (0-based) of the pipeline `stages`, and sets the job's
        attempts to 0 for the next stage, in one commit."""
        with self._store.transaction():
            self._store.execute(
                upsert("pipeline_stages", STAGE_COLUMNS, STAGE_COLUMNS[:5]),
                (*self._store.key(job.request_id), stage, basis(stages, job.request.input), output),
            )
            self._store.update(job, JobState.RUNNING, attempts=0)

    def clear(self, job: Job) -> None:
        """Forgets `job`'s stage outputs (inside the caller's transaction, when it opened one)."""
        self._store.execute(
            "DELETE FROM pipeline_stages WHERE chain_id=? AND coordinator=? AND request_id=? AND interval=?",
            self._store.key(job.request_id),
        )
