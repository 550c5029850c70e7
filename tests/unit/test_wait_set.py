"""`retry.wait_set`: a task waiting on an event with a timeout can always be cancelled, even when the event is set
in the same turn of the loop as the cancel (asyncio.wait_for on Python 3.11 swallows that cancel: gh-86296; the
receipt tracker then ran on after SIGTERM)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from node.retry import wait_set

Wait = Callable[[asyncio.Event, float], Awaitable[object]]


async def _wait_for(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)


async def _cancel_as_the_event_is_set(wait: Wait) -> bool:
    """Whether a loop waiting with `wait` ends when it is cancelled in the turn its event is set."""
    event, waiting = asyncio.Event(), asyncio.Event()

    async def loop() -> None:
        while True:
            waiting.set()
            await wait(event, 5.0)
            event.clear()

    task = asyncio.create_task(loop())
    await waiting.wait()  # the loop is now suspended inside `wait`
    event.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2.0)
    task.cancel()  # the swallowing variant: cancel again so the test ends
    await asyncio.wait({task}, timeout=2.0)
    return task in done


def test_a_cancel_in_the_turn_the_event_is_set_ends_the_task() -> None:
    assert asyncio.run(_cancel_as_the_event_is_set(wait_set))


def test_the_case_is_real_wait_for_swallows_it_on_this_python() -> None:
    swallowed = not asyncio.run(_cancel_as_the_event_is_set(_wait_for))
    import sys

    if sys.version_info >= (3, 12):
        pytest.skip("wait_for is built on asyncio.timeout from Python 3.12")
    assert swallowed


def test_wait_set_returns_whether_the_event_was_set() -> None:
    async def run() -> tuple[bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_set(event, 0.01)
        event.set()
        return timed_out, await wait_set(event, 0.01)

    assert asyncio.run(run()) == (False, True)
