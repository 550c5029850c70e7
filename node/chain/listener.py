"""Turns the coordinator's `RequestCreated` logs (and the SubscriptionManager's `SubscriptionCreated` and
`SubscriptionCancelled`, when the node serves one) into stored requests and subscriptions, never missing one.

Guarantees:
- Subscription logs share everything below with requests: one eth_getLogs filter and one WebSocket subscription
  (both addresses, all three topics), the confirmations, the reorg handling, and the commit with the cursor.
- On start and after every reconnect, logs are backfilled with `eth_getLogs` from the persisted cursor, after the
  live subscriptions are open, so no log falls between the two. The same log may arrive twice; the store drops the
  duplicate. Without a WebSocket URL the listener polls the head and the logs over HTTP.
- A log is handed on once its block is `confirmations` deep (0: at once). Handing on is durable by construction:
  the job rows of a block range and the cursor past it are committed in one SQLite transaction
  (`JobStore.record_requests`), and only then are the new jobs given to the scheduler; no queue sits between "seen" and
  "stored". Whatever the process dies of, a request whose block the cursor passed has a job row (test:
  tests/faults/test_handoff.py kills the node right after that commit). Live WebSocket logs are committed at the
  next turn of the event loop; over a WebSocket the cursor moves only when the logs are read back with eth_getLogs
  (every `log_reconcile_s`, and after `RECONCILE_BLOCKS` blocks), so a late notification, a crash or a log
  subscription that went quiet while heads kept coming can never move it past a request.
- Reorgs are found from block hashes (each new head's parent against the stored hash, and the stored hashes against
  the chain after a reconnect): the cursor rewinds to the fork, held logs of orphaned blocks are dropped, and
  `on_reorg(fork)` lets the node cancel jobs of orphaned requests; the backfill then re-reads the new branch.
- A provider that refuses a log range (its answer names a range or result limit) gets it split in halves until it
  answers; the range doubles again after each answered call, up to `MAX_LOG_RANGE` (and up to half the smallest
  refused range for `RANGE_LIMIT_TTL_S` after a refusal). A rate limit (HTTP 429, code -32005/429, "rate limit",
  "too many requests") is not a range refusal: the same call is retried after a back-off (`Retry-After` when given).
- WebSocket endpoints (`ws_url`, then `fallback_ws_urls`) are tried in turn. One that fails, or goes stale (no new
  head for `STALE_HEAD_BLOCKS` block times, clamped to [stale_head_min_s, stale_head_max_s], while the chain's head
  over HTTP or over its own calls is ahead of the last head it sent), is left; while no WebSocket works the listener
  polls the head and the logs over HTTP (the failing-over `RpcPool`) and tries the WebSockets again with a capped
  back-off. An idle chain (the HTTP head equals ours) is not stale. Each endpoint's problem is a condition
  (`"ws <url>"`, on `/readyz`, logged once per change), its classified answers are counted under source "ws".
- Every loop waits between rounds whatever the RPC answers (errors, nulls, malformed blocks, non-JSON): reconnects
  back off exponentially up to `RECONNECT_MAX_S` (WebSocket retries up to `WS_RETRY_MAX_S`), and the back-offs
  start again from the shortest after `HEALTHY_S` of heads. The listener never exits on an RPC error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eth_typing import ChecksumAddress
from tenacity import AsyncRetrying, retry_if_exception_type
from tenacity.wait import wait_exponential_jitter

from node import faultpoint
from node.chain.contracts import CoordinatorAbi, InferenceRequest, as_int
from node.chain.endpoints import WsEndpoints, counted, log_key, say_lost
from node.chain.heads import (
    MAX_UNVERIFIED_JUMP,
    MAX_UNVERIFIED_TIME_JUMP_S,
    BlockTime,
    Head,
    WsStale,
    as_head,
    find_fork,
    head_number,
    is_stale,
    read_head,
)
from node.chain.logs import Call, LogReader
from node.chain.rpc import RpcPool, public_url
from node.chain.subscriptions import ManagerTarget, SubscriptionEvent
from node.chain.wsrpc import WsRpc
from node.errors import Action
from node.jobs.intervals import Subscription
from node.jobs.store import Job, JobStore
from node.observability.conditions import CONDITIONS
from node.retry import backoff_s

log = logging.getLogger(__name__)

#: Back-off of the listener's outer loop (the HTTP RPC failing, anything unforeseen): first wait and cap, seconds.
RECONNECT_BASE_S = 0.5
RECONNECT_MAX_S = 10.0
#: Seconds a WebSocket may take to open and subscribe before it counts as failed.
WS_CONNECT_TIMEOUT_S = 10.0
#: Seconds of heads (a connection that delivers) after which the back-offs start again from the shortest.
HEALTHY_S = 30.0
#: Poll rounds in a row that may fail (each retried after a short back-off) before the outer loop's back-off.
POLL_FAILURES_MAX = 8
#: Block hashes kept for reorg detection: deeper reorgs than this are not recognised.
KEEP_BLOCKS = 256
#: Over a WebSocket, the cursor also moves (by eth_getLogs) once this many blocks passed since it last did, however
#: soon (a devnet mining a block per transaction).
RECONCILE_BLOCKS = 1024
#: A backfill that takes longer than this says how far it got, this often.
BACKFILL_PROGRESS_S = 2.0


class Listener:
    """Reads the coordinator's `RequestCreated` logs (WebSocket or HTTP polling), keeps the cursor and block hashes,
    and hands each request on once it is `confirmations` deep (a request seen twice is dropped by the store)."""

    def __init__(
        self,
        rpc: RpcPool,
        ws_url: str | None,
        coordinator: ChecksumAddress,
        abi: CoordinatorAbi,
        store: JobStore,
        *,
        start_block: int,
        confirmations: int,
        poll_interval_s: float,
        models: Mapping[bytes, str],
        on_jobs: Callable[[list[Job]], None],
        on_head: Callable[[Head], None] = lambda head: None,
        on_reorg: Callable[[int], None] = lambda fork: None,
        fallback_ws_urls: Sequence[str] = (),
        stale_head_min_s: float = 5.0,
        stale_head_max_s: float = 60.0,
        log_reconcile_s: float = 30.0,
        manager: ManagerTarget | None = None,
        on_subscriptions: Callable[[], None] = lambda: None,
    ) -> None:
        """`ws_url` then `fallback_ws_urls`: WebSocket endpoints tried in turn (none: HTTP polling every
        `poll_interval_s` seconds). `stale_head_min_s`/`stale_head_max_s`: bounds in seconds of the staleness
        check (`STALE_HEAD_BLOCKS` observed block times). `models`: model id -> name of the models served here (a
        request for another model is not recorded). `on_jobs`: gets the jobs just committed (their requests are
        in the store before it is called: it only starts work, it never has to save anything). `manager`: the
        SubscriptionManager whose logs are followed too (None: none); `on_subscriptions`: called after a commit that
        recorded subscription logs."""
        self._rpc = rpc
        self._ws = WsEndpoints([u for u in [ws_url, *fallback_ws_urls] if u])
        #: monotonic times of the last head the current WebSocket sent, and of the last staleness check.
        self._ws_head_at = 0.0
        self._ws_checked_at = 0.0
        #: monotonic time the current WebSocket was opened.
        self._ws_up_at = 0.0
        self.block_time = BlockTime(stale_head_min_s, stale_head_max_s)
        #: monotonic times a run of good heads (WebSocket or polled) started and last had one, for back-off resets.
        self._good_since: float | None = None
        self._good_last = 0.0
        self._mode = ""
        self._coordinator = coordinator
        self._abi = abi
        self._store = store
        self._confirmations = confirmations
        self._poll_interval_s = poll_interval_s
        self._models = models
        self._on_jobs = on_jobs
        self._manager = manager
        self._on_subscriptions = on_subscriptions
        #: Requests handed on but not yet committed: written with the next cursor save, or by `_flush` at the next
        #: turn of the event loop (a live log), whichever comes first. Never held across an await.
        self._pending: list[tuple[InferenceRequest | SubscriptionEvent, str]] = []
        self._flush_handle: asyncio.Handle | None = None
        #: Set when `run` ends: nothing is committed any more (what is pending was never passed by the cursor).
        self._closed = False
        #: Over a WebSocket: seconds between the eth_getLogs reads that move the cursor, and when the next is due.
        self._reconcile_s = log_reconcile_s
        self._reconcile_at = 0.0
        #: The newest confirmed block whose live logs were handed on over a working WebSocket (-1: none now).
        self._live_to = -1
        #: (block hash, log index) of the live logs handed on since the last read back, which that read skips.
        self._seen_live: set[tuple[str, str]] = set()
        self._on_head = on_head
        self._on_reorg = on_reorg
        #: Next block to read logs from: every log below it has been handed on.
        self.cursor = store.cursor(start_block)
        self._start_block = start_block
        self._hashes: dict[int, str] = store.blocks()
        #: Hashes seen since the last save (written once each, not the whole window on every head).
        self._unsaved: dict[int, str] = {}
        #: Logs seen live but not yet `confirmations` deep, by block number.
        self._held: dict[int, list[InferenceRequest | SubscriptionEvent]] = {}
        self._logs = LogReader(self._filter)
        self.head: Head | None = None
        #: monotonic time the chain was last heard from (a head or a log), for readiness.
        self.last_heard = 0.0
        self.connected = False
        self.reorgs = 0
        #: After a rewind: the head at that moment. Until the cursor passes it, every new head re-reads the logs
        #: with eth_getLogs (a live log of the new branch may have been dropped with the orphaned ones).
        self._reread_to: int | None = None

    @property
    def lag_blocks(self) -> int:
        """Blocks between the confirmed head and what has been handed on, read back or live (0 when caught up)."""
        if self.head is None:
            return 0
        return max(0, self.head.number - self._confirmations - max(self.cursor - 1, self._live_to))

    def _filter(self, from_block: int | None = None, to_block: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"address": self._coordinator, "topics": [self._abi.request_created_topic]}
        if self._manager is not None:
            params = {
                "address": [self._coordinator, self._manager.address],
                "topics": [[self._abi.request_created_topic, *self._manager.abi.topics]],
            }
        if from_block is not None and to_block is not None:
            params["fromBlock"] = hex(from_block)
            params["toBlock"] = hex(to_block)
        return params

    # ----------------------------------------------------------------------------------------------- logs

    def _decode(self, raw: Any) -> InferenceRequest | SubscriptionEvent | None:
        try:
            if self._manager is not None and str(raw.get("address", "")).lower() == self._manager.address.lower():
                return self._manager.abi.decode(raw)
            return self._abi.decode_request_created(raw)
        except Exception:
            log.exception("undecodable log in tx %s", raw.get("transactionHash"))
            return None

    def _emit(self, request: InferenceRequest | SubscriptionEvent) -> None:
        known = self._hashes.get(request.block_number)
        if known is not None and known != request.block_hash:
            log.info("dropping a log of block %d: the block was orphaned", request.block_number)
            return
        model = ""  # a cancellation: the store ignores one of a subscription it does not follow
        if isinstance(request, InferenceRequest | Subscription):
            model = self._models.get(request.model_id, "")
            if not model:
                log.debug("log of block %d: model 0x%s not served here", request.block_number, request.model_id.hex())
                return
        self._pending.append((request, model))
        if self._flush_handle is None:  # a live log: committed at the next turn of the loop, with any others by then
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Commits the pending requests (without moving the cursor) and hands their new jobs on."""
        self._flush_handle = None
        if self._pending and not self._closed:
            self._commit(None)

    def _commit(self, cursor: int | None, hashes: Sequence[tuple[int, str]] = ()) -> None:
        """The durable hand-off: the pending requests' job rows, and the cursor and block hashes when given, in one
        transaction (`JobStore.record_requests`); only then do `self.cursor` move and the new jobs go to `on_jobs`."""
        batch, self._pending = self._pending, []
        try:
            jobs = self._store.record_requests(batch, cursor=cursor, hashes=hashes, keep=KEEP_BLOCKS)
        except BaseException:  # nothing was committed: the requests wait for the next commit, with the cursor
            self._pending[:0] = batch
            raise
        if cursor is not None:
            self.cursor = cursor
        if jobs:
            self._on_jobs(jobs)
        if any(not isinstance(r, InferenceRequest) for r, _ in batch):
            self._on_subscriptions()

    def _on_log(self, raw: Any) -> None:
        """A live log. It is decoded at once and only the request is kept while it waits for its confirmations: a
        block of thousands of requests must not hold thousands of parsed JSON notifications (each ~2.5 kB of dict,
        keys and hex strings, five times the request it carries)."""
        self.last_heard = time.monotonic()
        if raw.get("removed"):
            log.info("log of block %d removed by a reorg", as_int(raw["blockNumber"]))
            self._held.get(as_int(raw["blockNumber"]), []).clear()
            return
        request = self._decode(raw)
        if request is None:
            return
        self._seen_live.add(log_key(raw))
        if self.head is not None and request.block_number <= self.head.number - self._confirmations:
            self._emit(request)
        else:
            self._held.setdefault(request.block_number, []).append(request)

    def _release(self) -> None:
        if self.head is None:
            return
        ready = self.head.number - self._confirmations
        for block in sorted(b for b in self._held if b <= ready):
            for request in self._held.pop(block):
                self._emit(request)

    # --------------------------------------------------------------------------------------------- heads

    async def _verify_jump(self, call: Call, head: Head) -> None:
        """A head far past the previous one (in number or in time) is read again by number before it is believed;
        raises ValueError when the chain does not have it (one bogus answer must not move the cursor or the clock)."""
        before = self.head
        number_from = before.number if before is not None else self.cursor - 1
        jumped = head.number > number_from + MAX_UNVERIFIED_JUMP
        if before is not None and abs(head.timestamp - before.timestamp) > MAX_UNVERIFIED_TIME_JUMP_S:
            jumped = True
        if not jumped:
            return
        again = await read_head(call, head.number)
        if again.hash != head.hash or again.timestamp != head.timestamp:
            CONDITIONS.count("rpc", Action.UNKNOWN)
            raise ValueError(f"head {head.number} not confirmed by the chain (asked again: {again.hash})")

    async def _on_new_head(self, call: Call, head: Head) -> None:
        """Checks the head against the stored hashes (rewinding on a reorg), records it, releases held logs."""
        await self._verify_jump(call, head)
        self.last_heard = time.monotonic()
        self.block_time.observe(head.number, head.timestamp)
        known = self._hashes.get(head.number)
        if known == head.hash:  # already seen (before a restart, or a repeated notification)
            if self.head is None or head.number > self.head.number:
                self.head = head
                self._on_head(head)
            return
        parent = self._hashes.get(head.number - 1)
        if known is not None or parent != head.parent_hash:  # replaced, or a gap in the stored hashes (polling)
            fork = await find_fork(call, self._hashes, head.number, head.parent_hash)
            if fork is not None:
                self._rewind(fork, head)
        self._hashes[head.number] = head.hash
        self._unsaved[head.number] = head.hash
        self.head = head
        self._on_head(head)
        self._release()

    def _rewind(self, fork: int, head: Head) -> None:
        """Blocks from `fork` on were replaced (the chain's head is `head`): forgets them, commits the cursor back at
        the fork (with the pending requests below it, in one transaction) and tells the node."""
        self.reorgs += 1
        log.warning("reorg: blocks from %d on were replaced (new head %d); rewinding", fork, head.number)
        for stale in [n for n in self._hashes if n >= fork]:
            del self._hashes[stale]
        for stale in [n for n in self._unsaved if n >= fork]:
            del self._unsaved[stale]
        for stale in [n for n in self._held if n >= fork]:
            del self._held[stale]
        self._pending = [(r, m) for r, m in self._pending if r.block_number < fork]
        self._seen_live.clear()
        self._live_to = min(self._live_to, fork - 1)
        self._store.forget_blocks_from(fork)
        self._commit(min(self.cursor, fork))
        self._reread_to = max(head.number, self._reread_to or 0)
        self._on_reorg(fork)

    async def _check_stored(self, call: Call, head: Head) -> None:
        """After a (re)connect: every stored hash up to `head` must still be on the chain, else a reorg happened
        meanwhile and the cursor goes back to the fork."""
        fork = await find_fork(call, self._hashes, head.number + 1, head.hash)
        if fork is not None:
            self._rewind(fork, head)

    def _save_progress(self, cursor: int | None = None) -> None:
        """Commits `cursor` (default: where it is) with the pending requests (whose blocks it passes) and the new
        block hashes, in one transaction; `self.cursor` moves only once that commit succeeded."""
        cursor = self.cursor if cursor is None else cursor
        if self.head is None:
            self._commit(cursor)
            return
        oldest = self.head.number - KEEP_BLOCKS
        self._commit(cursor, [(n, h) for n, h in self._unsaved.items() if n > oldest])
        self._unsaved.clear()
        if len(self._hashes) > KEEP_BLOCKS:
            for old in [n for n in self._hashes if n <= oldest]:
                del self._hashes[old]

    # ------------------------------------------------------------------------------------------- backfill

    async def backfill(self, call: Call) -> int:
        """Hands on every log from the cursor to the confirmed head; returns how many."""
        if self.head is None:
            return 0
        target = self.head.number - self._confirmations
        found, first, said = 0, self.cursor, time.monotonic()
        while self.cursor <= target:
            to_block = min(target, self.cursor + self._logs.size - 1)
            logs = await self._logs.read(call, self.cursor, to_block)
            for raw in logs:
                if log_key(raw) in self._seen_live:
                    continue  # handed on live already (the read back only makes sure none was missed)
                if (request := self._decode(raw)) is not None:
                    self._emit(request)
            found += len(logs)
            self._save_progress(to_block + 1)
            if logs:  # the cursor is committed past requests; their jobs are stored and no task of theirs has run
                faultpoint.reached("cursor-saved")
            if self.cursor <= target and time.monotonic() - said >= BACKFILL_PROGRESS_S:  # a long catch-up: progress
                said = time.monotonic()
                share = 100 * (self.cursor - first) / max(1, target - first + 1)
                log.info("backfill: block %d of %d (%.0f%%), %d request(s) so far", self.cursor, target, share, found)
        return found

    # ---------------------------------------------------------------------------------------------- loops

    async def run(self) -> None:
        """Listens until cancelled. Every failure waits a capped, jittered exponential back-off (tenacity) before the
        next try; the back-off starts again from `RECONNECT_BASE_S` after a healthy period (`HEALTHY_S` of heads)."""
        try:
            while True:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(Exception),
                    wait=wait_exponential_jitter(multiplier=RECONNECT_BASE_S, max=RECONNECT_MAX_S),
                    before_sleep=say_lost,
                    reraise=True,
                ):
                    with attempt:
                        await self._session()
        finally:  # stopped: nothing more is committed (pending requests were never passed by the stored cursor)
            self._closed = True
            if self._flush_handle is not None:
                self._flush_handle.cancel()

    def _healthy(self) -> bool:
        """Whether heads have been coming for `HEALTHY_S` (then back-offs start again from the shortest)."""
        return self._good_since is not None and self._good_last - self._good_since >= HEALTHY_S

    def _good_head(self) -> None:
        if CONDITIONS.get("listener") is not None:
            CONDITIONS.set("listener", None)
        now = time.monotonic()
        if self._good_since is None:
            self._good_since = now
        self._good_last = now

    async def _session(self) -> None:
        """One try: a WebSocket when one is due, else HTTP polling until one is. Returns (a fresh back-off) after a
        WebSocket failure, so HTTP polling takes over at once, and after a failure that ended a healthy period."""
        self._live_to = -1  # no live logs until a WebSocket is up again
        try:
            url = self._ws.due()
            if url is not None:
                try:
                    await self._run_ws(url)
                except Exception as exc:
                    self.connected = False
                    if self._ws.failed(url, exc):
                        self._mode = "ws-wait"
                return
            await self._run_polling(until=self._ws.retry_at if self._ws.urls else None)
        except Exception as exc:
            self.connected = False
            healthy = self._healthy()
            self._good_since = None
            if healthy:
                log.warning("listener lost the RPC (%s: %s); reconnecting", type(exc).__name__, exc)
                return
            raise

    async def _open_ws(self, url: str, stack: contextlib.AsyncExitStack) -> tuple[WsRpc, str]:
        """Opens `url` and subscribes (within `WS_CONNECT_TIMEOUT_S`); while a WebSocket failed before, polls over HTTP
        meanwhile so that nothing waits for the WebSocket. Returns the socket and the newHeads subscription id."""
        ws = WsRpc(url)

        async def connect() -> str:
            await stack.enter_async_context(ws)
            heads = await ws.subscribe("newHeads")
            await ws.subscribe("logs", self._filter())
            return heads

        task = asyncio.create_task(connect(), name="ws-connect")
        try:
            async with asyncio.timeout(WS_CONNECT_TIMEOUT_S):
                while not task.done():
                    if self._ws.failures:
                        try:
                            await self._poll_once()
                        except Exception as exc:  # the WebSocket attempt decides; this only keeps up meanwhile
                            log.debug("HTTP poll while connecting failed: %s", exc)
                    await asyncio.wait({task}, timeout=self._poll_interval_s if self._ws.failures else None)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return ws, task.result()

    async def _run_ws(self, url: str) -> None:
        shown = public_url(url)
        async with contextlib.AsyncExitStack() as stack:
            ws, heads = await self._open_ws(url, stack)
            call = counted(ws.request, self._rpc.calls)
            head = await read_head(call, "latest")
            await self._check_stored(call, head)
            await self._on_new_head(call, head)
            found = await self.backfill(call)
            self._reconcile_at = time.monotonic() + self._reconcile_s
            self._live_to = self.cursor - 1
            self.connected = True
            self._ws_head_at = self._ws_checked_at = self._ws_up_at = up_at = time.monotonic()
            self._good_head()
            self._mode = "ws"
            log.info(
                "listening to %s over WebSocket %s at block %d (backfilled %d, cursor %d)",
                self._coordinator,
                shown,
                head.number,
                found,
                self.cursor,
            )
            while True:
                subscription, result = await self._next_note(ws, url, call)
                if subscription == heads:
                    try:
                        head = as_head(result)
                    except Exception as exc:  # a malformed head is skipped; staleness counts from the last good one
                        CONDITIONS.count("ws", Action.UNKNOWN)
                        log.debug("malformed head from %s: %s", shown, exc)
                        continue
                    await self._on_new_head(call, head)
                    self._ws_head_at = time.monotonic()
                    self._good_head()
                    if self._ws.failures and self._ws_head_at - up_at >= HEALTHY_S:  # a healthy WebSocket again
                        self._ws.healthy()
                    CONDITIONS.set(f"ws {shown}", None)
                    if self._reread_to is not None:  # read the new branch's logs from the fork
                        await self.backfill(call)
                        if self.cursor > self._reread_to:
                            self._reread_to = None
                        continue
                    self._live_to = max(self._live_to, head.number - self._confirmations)
                    behind = head.number - self._confirmations - self.cursor
                    if time.monotonic() >= self._reconcile_at or behind >= RECONCILE_BLOCKS:
                        await self.backfill(call)  # eth_getLogs moves the cursor: never past a block not read back
                        self._reconcile_at = time.monotonic() + self._reconcile_s
                        self._seen_live.clear()
                    else:
                        self._save_progress()  # the new block hashes and any live requests; the cursor stays
                elif isinstance(result, dict):
                    self._on_log(result)
                else:
                    CONDITIONS.count("ws", Action.UNKNOWN)

    async def _next_note(self, ws: WsRpc, url: str, call: Call) -> tuple[str, Any]:
        """The next notification; while none comes, reads the logs back when that is due (`log_reconcile_s`) and,
        after the staleness bound, checks whether the chain moved on (raises `WsStale`) or is idle (waits on)."""
        while True:
            now = time.monotonic()
            stale_in = self.block_time.stale_after_s() - (now - max(self._ws_head_at, self._ws_checked_at))
            try:
                async with asyncio.timeout(max(0.0, min(stale_in, self._reconcile_at - now))):
                    return await ws.next_notification()
            except TimeoutError:
                pass
            if time.monotonic() >= self._reconcile_at:  # no head came meanwhile (an idle chain): read the logs back
                await self.backfill(call)
                self._reconcile_at = time.monotonic() + self._reconcile_s
                self._seen_live.clear()
            if time.monotonic() - max(self._ws_head_at, self._ws_checked_at) >= self.block_time.stale_after_s():
                await self._check_stale(url, call)

    async def _check_stale(self, url: str, call: Call) -> None:
        """The WebSocket sent no head for the staleness bound: asks the head over HTTP (or, failing that, over the
        WebSocket's own calls); raises `WsStale` when it is past ours, else (an idle chain) notes the check."""
        ours = self.head.number if self.head is not None else None
        theirs = await head_number(self._rpc.request, max(1.0, self.block_time.min_s))
        if theirs is None:
            theirs = await head_number(call, max(1.0, self.block_time.min_s))
        self._ws_checked_at = time.monotonic()
        silent = self._ws_checked_at - self._ws_head_at
        if is_stale(ours, theirs):
            raise WsStale(
                f"stale: no new head for {silent:.0f} s while the chain is at block {theirs} (last sent {ours})"
            )
        if theirs is not None:  # the chain is idle: it was heard from
            self.last_heard = self._ws_checked_at
            if self._ws_head_at > self._ws_up_at:  # this socket did send heads: nothing against it
                CONDITIONS.set(f"ws {public_url(url)}", None)

    async def _poll_once(self) -> None:
        """One HTTP round: the head, then the logs up to it."""
        call = self._rpc.request
        head = await read_head(call, "latest")
        await self._on_new_head(call, head)
        self._reread_to = None  # polling reads every block with eth_getLogs anyway
        await self.backfill(call)

    async def _run_polling(self, until: float | None) -> None:
        """Polls over HTTP every `poll_interval_s` until `until` (monotonic; None: for ever); raises on failure."""
        call = self._rpc.request
        head = await read_head(call, "latest")
        await self._check_stored(call, head)
        self.connected = True
        if self._mode not in ("polling", "ws-wait"):
            log.info(
                "polling %s over HTTP every %.2f s from block %d", self._coordinator, self._poll_interval_s, self.cursor
            )
            self._mode = "polling"
        failures = 0
        fresh = True  # `head` was just read
        while True:
            try:
                if not fresh:
                    head = await read_head(call, "latest")
                await self._on_new_head(call, head)
                self._reread_to = None  # polling reads every block with eth_getLogs anyway
                await self.backfill(call)
            except Exception as exc:
                # One failed round of a flaky endpoint: the next one after a short back-off, here, so a 25% error
                # rate does not push every round to the outer loop's longest wait. Too many in a row go there.
                failures += 1
                if failures >= POLL_FAILURES_MAX:
                    raise
                log.debug("poll round failed (%s: %s); again in a moment", type(exc).__name__, exc)
                fresh = False
                await asyncio.sleep(backoff_s(failures, self._poll_interval_s, RECONNECT_MAX_S))  # a back-off
                continue
            failures = 0
            self._good_head()
            if until is not None and time.monotonic() >= until:
                return
            await asyncio.sleep(self._poll_interval_s)
            fresh = False
