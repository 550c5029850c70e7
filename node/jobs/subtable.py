"""The store's `subscriptions` table: the SubscriptionManager's subscriptions this node follows.

Guarantees: rows are written inside the caller's transaction (`JobStore.record_requests`, with the listener's cursor),
so a subscription whose log the cursor passed is stored; a log seen twice is one row; a cancellation shrinks
`active_intervals` to `lastInterval + 1` and is undone when a reorg removes its block (`forget_from`), as a creation in
a replaced block removes the row (the backfill reads the new branch again). A cancellation of a subscription this node
does not follow (a model it does not serve) is ignored.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from node.jobs.intervals import Subscription, is_over

if TYPE_CHECKING:
    from node.chain.subscriptions import SubscriptionEvent
    from node.jobs.db import Db

log = logging.getLogger(__name__)

_COLUMNS = (
    "subscription_id, model_id, consumer, token, fee_per_node_wei, callback_gas, redundancy, period_s, intervals,"
    " start, block_number, block_hash, tx_hash, log_index, active_intervals, cancel_block"
)


class SubscriptionTable:
    """Subscriptions of one (chain, manager) in the store's database (the `JobStore`'s connection)."""

    def __init__(self, db: Db, chain_id: int, manager: str | None) -> None:
        """`manager`: the SubscriptionManager's address (lower case), or None when this node serves none."""
        self._db = db
        self._chain_id = chain_id
        self._manager = manager or ""

    def record(self, event: SubscriptionEvent) -> bool:
        """Writes a `SubscriptionCreated` (a new row; a duplicate is ignored) or a `SubscriptionCancelled` (the row's
        `active_intervals` shrinks). Returns whether anything changed. Call inside the store's transaction."""
        if isinstance(event, Subscription):
            s = event
            changed = self._db.execute(
                f"INSERT INTO subscriptions (chain_id, manager, {_COLUMNS}) VALUES"
                " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,NULL) ON CONFLICT DO NOTHING",
                (
                    self._chain_id,
                    self._manager,
                    str(s.subscription_id),
                    s.model_id.hex(),
                    s.consumer,
                    s.token,
                    str(s.fee_per_node_wei),
                    s.callback_gas_limit,
                    s.redundancy,
                    s.period_s,
                    s.intervals,
                    s.start,
                    s.block_number,
                    s.block_hash,
                    s.tx_hash,
                    s.log_index,
                    s.active_intervals,
                ),
            ).rowcount
            if changed:
                log.info(
                    "subscription %d: %d interval(s) of %d s from %d, redundancy %d, fee %d wei per node",
                    s.subscription_id,
                    s.intervals,
                    s.period_s,
                    s.start,
                    s.redundancy,
                    s.fee_per_node_wei,
                )
            return bool(changed)
        changed = self._db.execute(
            "UPDATE subscriptions SET active_intervals=CASE WHEN intervals < ? THEN intervals ELSE ? END,"
            " cancel_block=? WHERE chain_id=? AND"
            " manager=? AND subscription_id=? AND (cancel_block IS NULL OR cancel_block != ?)",
            (
                event.last_interval + 1,
                event.last_interval + 1,
                event.block_number,
                self._chain_id,
                self._manager,
                str(event.subscription_id),
                event.block_number,
            ),
        ).rowcount
        if changed:
            log.info(
                "subscription %d: cancelled; intervals after %d are not served (refund %d wei)",
                event.subscription_id,
                event.last_interval,
                event.refund_wei,
            )
        return bool(changed)

    def forget_from(self, block_number: int) -> None:
        """A reorg replaced the blocks from `block_number` on: creations in them are removed, cancellations in them
        undone. Call inside the store's transaction."""
        args = (self._chain_id, self._manager, block_number)
        self._db.execute("DELETE FROM subscriptions WHERE chain_id=? AND manager=? AND block_number >= ?", args)
        self._db.execute(
            "UPDATE subscriptions SET active_intervals=intervals, cancel_block=NULL WHERE chain_id=? AND manager=?"
            " AND cancel_block >= ?",
            args,
        )

    def live(self, timestamp: int) -> list[Subscription]:
        """Subscriptions with an interval current or to come at block time `timestamp`, oldest first."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM subscriptions WHERE chain_id=? AND manager=? ORDER BY block_number, log_index",
            (self._chain_id, self._manager),
        ).fetchall()
        subs = [_subscription(r) for r in rows]
        return [s for s in subs if not is_over(s, timestamp)]

    def get(self, subscription_id: int) -> Subscription | None:
        """One subscription as stored, or None."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM subscriptions WHERE chain_id=? AND manager=? AND subscription_id=?",
            (self._chain_id, self._manager, str(subscription_id)),
        ).fetchone()
        return None if row is None else _subscription(row)


def _subscription(row: tuple[object, ...]) -> Subscription:
    sid, model, consumer, token, fee, gas, redundancy, period, intervals, start, block, bhash, txh, index = row[:14]
    active, cancel_block = row[14:]
    return Subscription(
        subscription_id=int(str(sid)),
        model_id=bytes.fromhex(str(model)),
        consumer=str(consumer),
        token=str(token),
        fee_per_node_wei=int(str(fee)),
        callback_gas_limit=int(str(gas)),
        redundancy=int(str(redundancy)),
        period_s=int(str(period)),
        intervals=int(str(intervals)),
        start=int(str(start)),
        block_number=int(str(block)),
        block_hash=str(bhash),
        tx_hash=str(txh),
        log_index=int(str(index)),
        active_intervals=int(str(active)),
        cancelled=cancel_block is not None,
    )
