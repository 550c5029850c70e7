"""What became of each request on-chain, beyond the job's state: the consumer's callback, the fee earned, the
verification, and whether the node ended the request after its deadline (`reclaim`).

Kept in the store's `outcomes` table (same SQLite file, same (chain, coordinator, request, interval) key as the jobs),
written inside the commit that settles the job where there is one, so an outcome never outlives or precedes its job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from node.config import ETH_TOKEN
from node.jobs.store import JobStore

#: `reclaim` values: being sent; sent (`sent <tx hash>`, not yet mined); mined and it closed the request (`done <tx
#: hash>`); or the request was found closed already (`closed`, also when this node's reclaim lost a race and reverted).
RECLAIM_SENDING = "sending"
RECLAIM_SENT = "sent"
RECLAIM_DONE = "done"
RECLAIM_CLOSED = "closed"
#: `verification` values: the verifier found the output valid (paid, consumer called back) or rejected it; or an
#: optimistic verdict is pending until a unix time (`pending until <s>`), settled then by `finalizeDelivery`
#: (`finalize sent <tx hash>` once the node sent it; `finalizing` while it sends).
VERIFICATION_VALID = "valid"
VERIFICATION_REJECTED = "rejected"
PENDING_UNTIL = "pending until "
FINALIZING = "finalizing"
FINALIZE_SENT = "finalize sent"

_FIELDS = ("callback_ok", "fee_earned", "verification", "reclaim")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request's outcome: `callback_ok` (the consumer's callback ran without reverting, from `RequestFulfilled`;
    None before a delivery), `fee_earned` (credited to the node, in the request token's smallest unit; None if not
    known), `verification` (None for a plain request; else e.g. `valid`, `pending until <unix s>`, `rejected`), and
    `reclaim` (None; `sent <tx hash>`; `closed`)."""

    callback_ok: bool | None = None
    fee_earned: int | None = None
    verification: str | None = None
    reclaim: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the fee as a decimal string (it may not fit a JSON number)."""
        return {
            "callback_ok": self.callback_ok,
            "fee_earned": None if self.fee_earned is None else str(self.fee_earned),
            "verification": self.verification,
            "reclaim": self.reclaim,
        }


class Outcomes:
    """Reads and writes the `outcomes` table of one store's (chain, coordinator)."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    def _key(self, request_id: int, interval: int = 0) -> tuple[int, str, str, int]:
        return (self._store.chain_id, self._store.coordinator, str(request_id), interval)

    def set(self, request_id: int, *, interval: int = 0, **fields: Any) -> None:
        """Records the given fields of `request_id`'s outcome (the others are kept); `fee_earned` an int."""
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise TypeError(f"not outcome fields: {sorted(unknown)}")
        if fields.get("fee_earned") and self.get(request_id, interval).fee_earned is None:
            self._count_earned(request_id, interval, int(fields["fee_earned"]))
        values = {k: (str(v) if k == "fee_earned" and v is not None else v) for k, v in fields.items()}
        columns = ", ".join(values)
        updates = ", ".join(f"{k}=excluded.{k}" for k in values)
        self._store.execute(
            f"INSERT INTO outcomes (chain_id, coordinator, request_id, interval, {columns}, updated_at)"
            f" VALUES (?, ?, ?, ?, {', '.join('?' * len(values))}, ?)"
            f" ON CONFLICT (chain_id, coordinator, request_id, interval) DO UPDATE SET {updates},"
            " updated_at=excluded.updated_at",
            (*self._key(request_id, interval), *values.values(), time.time()),
        )

    def _count_earned(self, request_id: int, interval: int, fee: int) -> None:
        """Adds a first-recorded fee to the store's `earned` (by the request's payment token; ETH when the job row
        names none), what `infera_fees_earned_total` counts over the process's life."""
        rows = self._store.execute(
            "SELECT json_extract(request, '$.token') FROM jobs WHERE chain_id=? AND coordinator IN (?,?)"
            " AND request_id=? AND interval=?",
            (*self._store.scope, str(request_id), interval),
        )
        token = rows[0][0] if rows and isinstance(rows[0][0], str) else ETH_TOKEN
        self._store.earned[token] += fee

    def get(self, request_id: int, interval: int = 0) -> Outcome:
        """The outcome recorded for `request_id` (all None when nothing is)."""
        rows = self._store.execute(
            f"SELECT {', '.join(_FIELDS)} FROM outcomes WHERE chain_id=? AND coordinator=? AND request_id=?"
            " AND interval=?",
            self._key(request_id, interval),
        )
        if not rows:
            return Outcome()
        ok, fee, verification, reclaim = rows[0]
        return Outcome(None if ok is None else bool(ok), None if fee is None else int(fee), verification, reclaim)

    def reclaim_due(self, now: int, limit: int, *, stale_before: float = 0.0) -> list[tuple[int, int]]:
        """(request id, deadline) of the requests this node took on whose deadline is before `now` (unix s, the
        chain's time) and that may still be open: a job delivered to a redundant request, expired, or failed (a report
        below the failure quorum leaves the request open), not yet checked for `reclaim` — or whose `reclaim` was
        sent (or being sent) by an earlier run and last marked before `stale_before` (unix s, wall time): a
        transaction that never landed is tried again. Skipped requests are not the node's to end (no gas is spent on
        them). A consensus request's job is `confirmed` once its commit is mined, whatever its redundancy: it may
        still be open (unrevealed, no quorum). At most `limit`, oldest deadline first."""
        rows = self._store.execute(
            "SELECT j.request_id, CAST(json_extract(j.request, '$.deadline') AS INTEGER) AS deadline FROM jobs j"
            " LEFT JOIN outcomes o ON o.chain_id = j.chain_id AND o.coordinator = j.coordinator"
            " AND o.request_id = j.request_id AND o.interval = j.interval"
            " WHERE j.chain_id=? AND j.coordinator=? AND j.interval=0"
            " AND (o.reclaim IS NULL OR ((o.reclaim = ? OR o.reclaim LIKE ?) AND o.updated_at < ?))"
            " AND j.state IN ('confirmed', 'expired', 'failed')"
            " AND CAST(json_extract(j.request, '$.deadline') AS INTEGER) < ?"
            " AND NOT (j.state = 'confirmed' AND CAST(json_extract(j.request, '$.redundancy') AS INTEGER) = 1"
            " AND NOT (COALESCE(o.verification, '') LIKE 'committed%' OR COALESCE(o.verification, '') LIKE 'reveal%'"
            " OR COALESCE(o.verification, '') LIKE 'no quorum%'))"
            " ORDER BY deadline LIMIT ?",
            (
                self._store.chain_id,
                self._store.coordinator,
                RECLAIM_SENDING,
                RECLAIM_SENT + " %",
                stale_before,
                now,
                limit,
            ),
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    def age_s(self, request_id: int, interval: int = 0) -> float:
        """Seconds (wall time) since `request_id`'s outcome row last changed; infinity without a row."""
        rows = self._store.execute(
            "SELECT updated_at FROM outcomes WHERE chain_id=? AND coordinator=? AND request_id=? AND interval=?",
            self._key(request_id, interval),
        )
        return time.time() - float(rows[0][0]) if rows else float("inf")

    def consensus_due(self, limit: int, states: tuple[str, ...]) -> list[tuple[int, str]]:
        """(request id, verification) of the consensus jobs whose verification starts with one of `states` (e.g.
        `committed`, `reveal sent <tx>`): at most `limit`, oldest change first (node/chain/consensus.py)."""
        where = " OR ".join("verification LIKE ?" for _ in states)
        rows = self._store.execute(
            "SELECT request_id, verification FROM outcomes WHERE chain_id=? AND coordinator=? AND interval=0"
            f" AND ({where}) ORDER BY updated_at LIMIT ?",
            (self._store.chain_id, self._store.coordinator, *(s + "%" for s in states), limit),
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    def finalize_due(self, now: int, limit: int) -> list[int]:
        """Requests whose delivery waits for an optimistic verdict that was due before `now` (unix s, the chain's
        time), or whose `finalizeDelivery` was sent (or being sent) and not yet seen settled: at most `limit`,
        oldest change first."""
        rows = self._store.execute(
            "SELECT request_id FROM outcomes WHERE chain_id=? AND coordinator=? AND interval=0"
            " AND ((verification LIKE ? AND CAST(substr(verification, ?) AS INTEGER) < ?)"
            " OR verification LIKE ? OR verification = ?)"
            " ORDER BY updated_at LIMIT ?",
            (
                self._store.chain_id,
                self._store.coordinator,
                PENDING_UNTIL + "%",
                len(PENDING_UNTIL) + 1,
                now,
                FINALIZE_SENT + "%",
                FINALIZING,
                limit,
            ),
        )
        return [int(r[0]) for r in rows]

    def earned_by_token(self) -> dict[str, int]:
        """The fees credited to this node, summed by payment token (checksummed; the zero address for ETH) in the
        token's smallest unit, over the jobs the store keeps (`store.retention_days`: pruned jobs drop out)."""
        rows = self._store.execute(
            "SELECT json_extract(j.request, '$.token'), o.fee_earned FROM outcomes o JOIN jobs j"
            " ON o.chain_id = j.chain_id AND o.coordinator = j.coordinator AND o.request_id = j.request_id"
            " AND o.interval = j.interval WHERE o.chain_id=? AND o.coordinator IN (?,?) AND o.fee_earned IS NOT NULL",
            self._store.scope,
        )
        earned: dict[str, int] = {}
        for token, fee in rows:
            if isinstance(token, str) and str(fee).isdigit():
                earned[token] = earned.get(token, 0) + int(fee)
        return earned
