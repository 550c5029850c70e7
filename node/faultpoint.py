"""Named points where a test can kill the node on purpose, to prove that no crash there loses or repeats a job.

A point does nothing unless the environment variable `INFERA_FAULT_POINT` names it when the process starts:
`INFERA_FAULT_POINT=<name>` SIGKILLs the process the first time the point is reached, `<name>:<n>` the n-th time.
Only tests arm it (tests/faults); an operator never sets it. Points the node has:

- `cursor-saved`: the listener's backfill has committed its cursor past a block range that had request logs (with,
  since the durable hand-off, their job rows in the same commit) and no computation of theirs has run yet.
- `tx-stored`: a delivery's transaction is signed and committed with its jobs (now `submitted`), not yet broadcast.
- `proof-saved`: a verified job's output and proof are committed (node/jobs/scheduler.py) and nothing was sent yet.
- `reveal-sending`: a consensus job's commit is mined and its reveal simulated fine, not yet marked nor sent
  (node/chain/consensus.py): the node is between its two actions.
"""

from __future__ import annotations

import os
import signal

ENV = "INFERA_FAULT_POINT"


def _armed() -> tuple[str, int] | None:
    value = os.environ.get(ENV, "")
    if not value:
        return None
    name, _, nth = value.partition(":")
    return name, int(nth) if nth else 1


_ARMED = _armed()
_reached: dict[str, int] = {}


def reached(name: str) -> None:
    """Kills this process (SIGKILL: no cleanup, no flush) if the test armed `name` and this is its n-th time."""
    if _ARMED is None or _ARMED[0] != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)
