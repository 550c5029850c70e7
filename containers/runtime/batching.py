"""Dynamic batching: requests that arrive together run as one model call.

Guarantees: a request waits at most `max_wait_ms` after the first request of its batch arrived (plus the time the
previous batch still needs); a batch never exceeds `max_batch_size`; one batch runs at a time on the model's
worker thread while the next one gathers; each caller gets its own output, in order, or the batch's error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

Args = tuple[Any, ...]
Predict = Callable[[Sequence[Args]], list[Args]]


@dataclass
class BatchStats:
    """Batches run and items in them, the largest, and how many batches had each size."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest = max(self.largest, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1

    @property
    def mean_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class DynamicBatcher:
    """Gathers single predictions into batches of at most `max_batch_size`, waiting at most `max_wait_ms` for a
    batch to fill; runs them on `executor`."""

    def __init__(self, predict: Predict, executor: Executor, *, max_batch_size: int, max_wait_ms: float) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._predict = predict
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(0.0, max_wait_ms / 1000)
        self._queue: asyncio.Queue[tuple[Args, asyncio.Future[Args]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.stats = BatchStats()
        #: Requests submitted and not yet answered.
        self.pending = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="batcher")

    async def stop(self, timeout_s: float = 60.0) -> None:
        """Finishes what is queued (up to `timeout_s`), then stops."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, args: Args) -> Args:
        future: asyncio.Future[Args] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((args, future))
        self.pending += 1
        try:
            return await future
        finally:
            self.pending -= 1

    async def _gather(self) -> list[tuple[Args, asyncio.Future[Args]]]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            try:
                await self._run_batch(loop, [(args, fut) for args, fut in batch if not fut.cancelled()])
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, live: list[tuple[Args, asyncio.Future[Args]]]) -> None:
        if live:
            self.stats.record(len(live))
            try:
                outputs = await loop.run_in_executor(self._executor, self._predict, [a for a, _ in live])
                if len(outputs) != len(live):
                    raise RuntimeError(f"model returned {len(outputs)} outputs for {len(live)} inputs")
            except Exception as exc:
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            for (_, fut), out in zip(live, outputs, strict=True):
                if not fut.done():
                    fut.set_result(out)


def default_token_budget(device: str) -> int:
    """Tokens per forward pass: small groups on CPU, where padded tokens cost as much as real ones (256 measured
    fastest for MiniLM on 2 cores, see BENCHMARKS.md); large on a GPU, which wants wide batches."""
    return 16_384 if device.startswith("cuda") else 256


def length_buckets(lengths: Sequence[int], *, token_budget: int, max_items: int) -> list[list[int]]:
    """Groups item indices by length so padding stays small: sorted by length, each group's
    `len(group) * longest` within `token_budget` (a lone item may exceed it), at most `max_items` per group."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # ascending order: the newest item is the longest
        if current and ((len(current) + 1) * longest > token_budget or len(current) >= max_items):
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups
