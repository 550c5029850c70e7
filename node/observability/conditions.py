"""What is wrong right now, said once per change: the node's conditions and its count of outside answers.

An endpoint that goes stale, a key that cannot send, a container that rate-limits: each is a *condition* of a named
subject (`"key 0xabc…"`, `"ws wss://rpc.example"`). `Conditions.set(subject, problem)` logs when a subject's problem
starts, changes or clears, never once per attempt, and `/readyz`, `/status` and the metrics read the current set.
Every answer from outside that is not a plain success is counted by source and `Action`
(`infera_outside_answers_total`).
"""

from __future__ import annotations

import collections
import logging
import threading

from node.errors import Action

log = logging.getLogger(__name__)


class Conditions:
    """Current problems by subject, and counts of outside answers by (source, action). Thread-safe (the counts are
    bumped from the event loop only, the lock guards scrapes from other threads)."""

    def __init__(self) -> None:
        self._problems: dict[str, str] = {}
        self._blocking: set[str] = set()
        self._lock = threading.Lock()
        #: Outside answers that were not a plain success, by (source, action value).
        self.answers: collections.Counter[tuple[str, str]] = collections.Counter()

    def set(self, subject: str, problem: str | None, *, blocks_ready: bool = True) -> None:
        """Records `subject`'s problem (None: it is fine again), logging only when that changes. `blocks_ready`:
        whether the node is not ready while it lasts (a key that cannot send is; one rate-limited container of
        several is not)."""
        with self._lock:
            before = self._problems.get(subject)
            if problem is None:
                self._problems.pop(subject, None)
                self._blocking.discard(subject)
            else:
                self._problems[subject] = problem
                if blocks_ready:
                    self._blocking.add(subject)
                else:
                    self._blocking.discard(subject)
        if before == problem:
            return
        if problem is None:
            log.info("%s: recovered (was: %s)", subject, before)
        else:
            log.warning("%s: %s", subject, problem)

    def get(self, subject: str) -> str | None:
        """The current problem of `subject` (e.g. `"key 0xabc…"`), or None when it has none."""
        return self._problems.get(subject)

    def problems(self, *, blocking_only: bool = False) -> list[str]:
        """`"subject: problem"` for each current problem (only those that block readiness, if asked)."""
        with self._lock:
            return [f"{s}: {p}" for s, p in sorted(self._problems.items()) if not blocking_only or s in self._blocking]

    def count(self, source: str, action: Action) -> None:
        """Counts one outside answer from `source` ("rpc", "ws", "container", "send") classified as `action`."""
        self.answers[(source, action.value)] += 1

    def reset(self) -> None:
        """Forgets everything (tests that run several nodes in one process)."""
        with self._lock:
            self._problems.clear()
            self._blocking.clear()
            self.answers.clear()


#: The process's conditions: one node per process.
CONDITIONS = Conditions()
