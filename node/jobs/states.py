"""A job's life as data: its states and every transition allowed between them.

Every state change of a job goes through `check` (the store calls it on each write): a transition that is not in
`TRANSITIONS` raises `IllegalTransition` before anything is written, so no layer can move a job somewhere the
protocol does not allow (deliver a job twice, recompute a delivered one, revive a settled one).

    seen ─► running ─► computed ─► submitted ─► confirmed
      │        │  ▲        │  ▲        │
      │        └──┘        │  └────────┤ (the transaction was dropped or refused: sent again, never recomputed)
      ├──────────┴─────────┴───────────┴─► failed | expired       (any of them)   orphaned (a reorg removed it)
      └─► skipped (the request is outside this node's fee policy: nothing is run or sent)

- `seen`: the request is recorded (committed with the listener's cursor); nothing has run.
- `running`: a container call is under way or backing off (`attempts` counts the calls).
- `computed`: the output (or a failure to report) is committed; what remains is to send it.
- `submitted`: a signed transaction carrying it is committed (and broadcast).
- `confirmed` | `failed` | `expired`: settled (delivered; failed or reported failed; settled by someone else or
  past its deadline). `failed` goes back to `seen`/`computed` only by the operator's `infera jobs retry`.
- `skipped`: the request's payment is outside the model's fee policy (a token not accepted, a fee below the
  minimum) or it names a verifier this node cannot satisfy: no container call, no transaction. (A computed job
  becomes `skipped` when the coordinator says its request needs a proof, `ProofRequired`: never a failure
  report.) The operator's `infera jobs retry` takes it up again (`seen`).
- `orphaned`: a reorg removed its request; no layer moves it on. Seeing the request again on the new branch revives
  its row (`seen`, or `computed` when the re-included request asks for the same thing and the output is kept).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from node.errors import InferaError


class JobState(enum.StrEnum):
    """A job's state (see the module's diagram)."""

    SEEN = "seen"
    RUNNING = "running"
    COMPUTED = "computed"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    EXPIRED = "expired"
    ORPHANED = "orphaned"
    SKIPPED = "skipped"


S = JobState

TERMINAL = frozenset({S.CONFIRMED, S.FAILED, S.EXPIRED, S.ORPHANED, S.SKIPPED})
#: Jobs a restarted node picks up again (the scheduler's; `submitted` ones belong to their transaction).
RESUMABLE = (S.SEEN, S.RUNNING, S.COMPUTED)

#: state -> the states it may move to. A move to the same state is a field update (attempts, a replacement's hash).
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    S.SEEN: frozenset({S.RUNNING, S.COMPUTED, S.FAILED, S.EXPIRED, S.ORPHANED, S.SKIPPED}),
    S.RUNNING: frozenset({S.RUNNING, S.COMPUTED, S.FAILED, S.EXPIRED, S.ORPHANED}),
    # SKIPPED from computed/submitted: the coordinator refused a plain delivery because the request needs a proof
    # (`ProofRequired`): not the node's failure to report, nothing more to send.
    S.COMPUTED: frozenset({S.COMPUTED, S.SUBMITTED, S.FAILED, S.EXPIRED, S.ORPHANED, S.SKIPPED}),
    S.SUBMITTED: frozenset({S.SUBMITTED, S.COMPUTED, S.CONFIRMED, S.FAILED, S.EXPIRED, S.ORPHANED, S.SKIPPED}),
    # A reorg may remove the request of a settled job too; the re-included request is then served again (or kept).
    S.CONFIRMED: frozenset({S.ORPHANED}),
    S.EXPIRED: frozenset({S.ORPHANED}),
    S.FAILED: frozenset({S.ORPHANED, S.SEEN, S.COMPUTED}),  # SEEN/COMPUTED: the operator's `jobs retry`
    S.SKIPPED: frozenset({S.ORPHANED, S.SEEN}),  # SEEN: the operator's `jobs retry` (after changing the policy)
    # No layer moves an orphaned job: a writer that still holds it (a send simulated before the reorg) must not
    # bring it back. Only the request's re-inclusion does, as a new row (`JobStore.add`, `check_revival`).
    S.ORPHANED: frozenset(),
}
#: What an orphaned job's row becomes when its request is seen again on the new branch.
REVIVALS = frozenset({S.SEEN, S.COMPUTED})


class IllegalTransition(InferaError):
    """A layer tried to move a job along a transition `TRANSITIONS` does not have (a bug, never an outside
    answer): nothing was written."""


def check(request_id: int, before: JobState, after: JobState) -> None:
    """Raises `IllegalTransition` unless a job may move from `before` to `after`."""
    if after not in TRANSITIONS[before]:
        raise IllegalTransition(f"job {request_id}: {before} -> {after} is not an allowed transition")


def check_revival(request_id: int, before: JobState, after: JobState) -> None:
    """Raises `IllegalTransition` unless `before` is `orphaned` and `after` a state a re-included request starts in."""
    if before is not S.ORPHANED or after not in REVIVALS:
        raise IllegalTransition(f"job {request_id}: {before} cannot be revived as {after}")
