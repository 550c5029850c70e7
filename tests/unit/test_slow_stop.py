"""A slow stop of the scheduler (`Scheduler.drain`) on a real SQLite store with held stage containers: its progress
lines name the requests it waits for and the time left of its wait, and a second stop signal stops the computations
at once (they stay stored, their attempt given back), said in the log."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.chain.contracts import model_id
from node.jobs.scheduler import Scheduler
from node.jobs.store import JobState
from tests.unit.test_dispatch_retry import Clock
from tests.unit.test_pipeline import PIPE, Sender, Stage, open_store, pipeline, request


class Said(logging.Handler):
    """Collects the scheduler's log lines; `seen(pattern)` is an event set once a line matches it."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.waits: list[tuple[re.Pattern[str], asyncio.Event]] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        self.lines.append(line)
        for pattern, event in self.waits:
            if pattern.search(line):
                event.set()

    def seen(self, pattern: str) -> asyncio.Event:
        event = asyncio.Event()
        self.waits.append((re.compile(pattern), event))
        if any(re.search(pattern, line) for line in self.lines):
            event.set()
        return event


@pytest.fixture
def said() -> Iterator[Said]:
    handler = Said()
    log = logging.getLogger("node.jobs.scheduler")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


async def test_a_slow_stop_names_its_requests_and_time_left_and_a_second_signal_stops_them_now(
    tmp_path: Path, said: Said
) -> None:
    loop = asyncio.get_running_loop()
    store = open_store(str(tmp_path / "jobs.db"))
    hold = asyncio.Event()  # the stage containers never answer in this run
    first, second = Stage(b"A", hold=hold), Stage(b"B")
    scheduler = Scheduler(store, {model_id(PIPE): pipeline(Clock(), first, second)}, Sender())
    jobs = store.record_requests([(request(7, b"x"), PIPE), (request(9, b"y"), PIPE)])
    scheduler.admit(jobs)
    await asyncio.wait_for(first.entered.wait(), timeout=10)
    try:
        drain = asyncio.create_task(scheduler.drain(timeout_s=30, report_s=0.05))
        progress = (
            r"^stopping: 2 computation\(s\) still running \(request 7, request 9\); stopped in (\d+) s of 30 unless"
        )
        await asyncio.wait_for(said.seen(progress).wait(), timeout=10)
        left = int(next(m for line in said.lines if (m := re.search(progress, line))).group(1))
        assert 20 <= left <= 30
        assert not any("job-" in line for line in said.lines)  # requests, not asyncio task names
        os.kill(os.getpid(), signal.SIGINT)  # the operator presses Ctrl-C again
        await asyncio.wait_for(drain, timeout=10)  # at once, not after the 30 s
        assert any(
            re.fullmatch(
                r"stopping: already stopping; stopping the 2 running computation\(s\) now instead of in up to \d+ s"
                r" more \(they resume at the next start\)",
                line,
            )
            for line in said.lines
        ), said.lines
        assert scheduler.running == 0
        for job in jobs:  # stored as running with the attempt given back: the next start resumes them
            assert (job.state, job.attempts) == (JobState.RUNNING, 0)
        os.kill(os.getpid(), signal.SIGTERM)  # a third signal: answered, nothing else happens
        await asyncio.wait_for(said.seen(r"already stopping; the computations are stopped").wait(), timeout=10)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        store.close()
