"""The store's rows: the SQLite layout (with its version), a job and a stored transaction as the node works on them,
and a request's JSON form in the `jobs.request` column."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils.address import to_checksum_address

from node.chain.contracts import InferenceRequest
from node.jobs.intervals import split_job_id
from node.jobs.states import JobState

#: The verifier of a plain request, and of every request stored before requests named their verifier.
ZERO_ADDRESS = "0x" + "00" * 20

#: The store's layout version, kept in SQLite's `user_version`. A later Infera that changes the layout raises it and
#: migrates older files on open (`MIGRATIONS`); an older Infera refuses a newer file rather than misreading it.
#: 2: the `subscriptions` table (the SubscriptionManager's subscriptions; their intervals are rows of `jobs`).
SCHEMA_VERSION = 2

SUBSCRIPTIONS_TABLE = """
CREATE TABLE IF NOT EXISTS subscriptions (
    chain_id         INTEGER NOT NULL,
    manager          TEXT    NOT NULL,
    subscription_id  TEXT    NOT NULL,
    model_id         TEXT    NOT NULL,
    consumer         TEXT    NOT NULL,
    token            TEXT    NOT NULL,
    fee_per_node_wei TEXT    NOT NULL,
    callback_gas     INTEGER NOT NULL,
    redundancy       INTEGER NOT NULL,
    period_s         INTEGER NOT NULL,
    intervals        INTEGER NOT NULL,
    start            INTEGER NOT NULL,
    active_intervals INTEGER NOT NULL,
    block_number     INTEGER NOT NULL,
    block_hash       TEXT    NOT NULL,
    tx_hash          TEXT    NOT NULL,
    log_index        INTEGER NOT NULL,
    cancel_block     INTEGER,
    PRIMARY KEY (chain_id, manager, subscription_id)
);
"""

#: from version -> the SQL that brings a file of that version to the next (run in one transaction each).
MIGRATIONS: dict[int, str] = {1: SUBSCRIPTIONS_TABLE}

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS jobs (
    chain_id     INTEGER NOT NULL,
    coordinator  TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,
    interval     INTEGER NOT NULL DEFAULT 0,
    model        TEXT    NOT NULL,
    request      TEXT    NOT NULL,
    block_number INTEGER NOT NULL,
    block_hash   TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    output       BLOB,
    failure      TEXT,
    tx_hash      TEXT,
    nonce        INTEGER,
    error        TEXT,
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL,
    PRIMARY KEY (chain_id, coordinator, request_id, interval)
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, updated_at);
CREATE TABLE IF NOT EXISTS cursors (
    chain_id    INTEGER NOT NULL,
    coordinator TEXT    NOT NULL,
    next_block  INTEGER NOT NULL,
    PRIMARY KEY (chain_id, coordinator)
);
CREATE TABLE IF NOT EXISTS blocks (
    chain_id INTEGER NOT NULL,
    number   INTEGER NOT NULL,
    hash     TEXT    NOT NULL,
    PRIMARY KEY (chain_id, number)
);
CREATE TABLE IF NOT EXISTS txs (
    chain_id     INTEGER NOT NULL,
    sender       TEXT    NOT NULL,
    nonce        INTEGER NOT NULL,
    coordinator  TEXT    NOT NULL,
    hashes       TEXT    NOT NULL,
    raw          BLOB    NOT NULL,
    request      TEXT    NOT NULL,
    items        TEXT    NOT NULL,
    sent_block   INTEGER NOT NULL,
    mined_block  INTEGER,
    state        TEXT    NOT NULL,
    updated_at   REAL    NOT NULL,
    PRIMARY KEY (chain_id, sender, nonce)
);
CREATE INDEX IF NOT EXISTS txs_by_state ON txs (state, updated_at);
CREATE TABLE IF NOT EXISTS outcomes (
    chain_id     INTEGER NOT NULL,
    coordinator  TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,
    interval     INTEGER NOT NULL DEFAULT 0,
    callback_ok  INTEGER,
    fee_earned   TEXT,
    verification TEXT,
    reclaim      TEXT,
    updated_at   REAL    NOT NULL,
    PRIMARY KEY (chain_id, coordinator, request_id, interval)
);
"""
    + SUBSCRIPTIONS_TABLE
)


#: The columns of `jobs` and `txs`, in table order, and the key of `jobs`: for `upsert`.
JOB_COLUMNS = (
    "chain_id", "coordinator", "request_id", "interval", "model", "request", "block_number", "block_hash", "state",
    "attempts", "output", "failure", "tx_hash", "nonce", "error", "created_at", "updated_at",
)  # fmt: skip
JOB_KEY = ("chain_id", "coordinator", "request_id", "interval")
TX_COLUMNS = (
    "chain_id", "sender", "nonce", "coordinator", "hashes", "raw", "request", "items", "sent_block", "mined_block",
    "state", "updated_at",
)  # fmt: skip


def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """`INSERT INTO table (columns) VALUES (?, ...)`, replacing every other column of a row with the same `key`: what
    SQLite's `INSERT OR REPLACE` does for a full row, in the SQL that SQLite and PostgreSQL both run."""
    updates = ", ".join(f"{c}=excluded.{c}" for c in columns if c not in key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


def request_to_json(r: InferenceRequest) -> str:
    """A request as the JSON text of the `jobs.request` column (big integers and bytes as strings)."""
    return json.dumps(
        {
            "request_id": str(r.request_id),
            "model_id": r.model_id.hex(),
            "consumer": r.consumer,
            "input": r.input.hex(),
            "token": r.token,
            "fee_per_node_wei": str(r.fee_per_node_wei),
            "callback_gas_limit": r.callback_gas_limit,
            "redundancy": r.redundancy,
            "deadline": r.deadline,
            "block_number": r.block_number,
            "block_hash": r.block_hash,
            "tx_hash": r.tx_hash,
            "log_index": r.log_index,
            "verifier": r.verifier,
        }
    )


def request_from_json(text: str) -> InferenceRequest:
    """The request a `jobs.request` column holds (`request_to_json`'s inverse); raises KeyError or ValueError
    for a damaged row. A row written before requests named their verifier reads as a plain request (zero address)."""
    d = json.loads(text)
    return InferenceRequest(
        request_id=int(d["request_id"]),
        model_id=bytes.fromhex(d["model_id"]),
        consumer=to_checksum_address(d["consumer"]),
        input=bytes.fromhex(d["input"]),
        token=to_checksum_address(d["token"]),
        fee_per_node_wei=int(d["fee_per_node_wei"]),
        callback_gas_limit=int(d["callback_gas_limit"]),
        redundancy=int(d["redundancy"]),
        deadline=int(d["deadline"]),
        block_number=int(d["block_number"]),
        block_hash=str(d["block_hash"]),
        tx_hash=str(d["tx_hash"]),
        log_index=int(d["log_index"]),
        verifier=to_checksum_address(d.get("verifier", ZERO_ADDRESS)),
    )


@dataclass(slots=True)
class Job:
    """A job as the scheduler works on it; every change goes through `JobStore` so it is committed."""

    request: InferenceRequest
    model_name: str
    state: JobState = JobState.SEEN
    attempts: int = 0
    output: bytes | None = None
    #: Set when the job is to be reported as failed on-chain instead of delivered.
    failure: str | None = None
    tx_hash: str | None = None
    nonce: int | None = None
    error: str | None = None
    seen_at: float = field(default_factory=time.monotonic)
    #: The proof delivered with the output of a verified request (kept in the store's `proofs` table).
    proof: bytes | None = None

    @property
    def request_id(self) -> int:
        """The job's id: the request id, or for a subscription interval its negative id (`node.jobs.intervals`)."""
        return self.request.request_id

    @property
    def subscription(self) -> tuple[int, int] | None:
        """(subscription id, interval) of a subscription interval's job; None for a one-off request."""
        return split_job_id(self.request.request_id)


@dataclass(slots=True)
class StoredTx:
    """A transaction the node signed: kept until mined (and confirmed) so it can be tracked, bumped or resent."""

    sender: str
    nonce: int
    hashes: list[str]
    raw: bytes
    #: The unsigned transaction (to, data, gas, fees) so a bump can re-sign it.
    request: dict[str, Any]
    #: (request id, failed) of each job it carries, in order.
    items: list[tuple[int, bool]]
    sent_block: int
    state: str = "pending"
    mined_block: int | None = None
