"""Verified requests: which ones this node serves, and the proofs it delivers with them.

A request names a verifier (`InferenceRequest.verifier`; the zero address for a plain request). The node serves it
only when the operator listed that verifier (`[chain] verifiers`: address -> kind) and can satisfy it:
- `attestation` (atomic): the model's container signs its outputs (`[[models]] attests = true`); the proof is the
  container's, bound to the chain, coordinator, request and the delivering node;
- `optimistic` (re-execution): nothing to prove up front (the proof is empty); the output is disputable for the
  verifier's window, then the node settles it with `finalizeDelivery` (node/chain/reclaim.py `Finalizer`).
Any other verified request is skipped before any container call or gas, like a request outside the fee policy
(`Skip`, `infera_requests_skipped{reason="verifier_not_supported"}`).

Proofs live in the store's `proofs` table (same SQLite file and key as the jobs; created if missing, so an older
store gains it without a version change), written in the commit that records the job's output.
"""

from __future__ import annotations

from collections.abc import Mapping

from node.config import ModelConfig
from node.jobs.fees import Skip
from node.jobs.rows import JOB_KEY, upsert
from node.jobs.store import JobStore

#: Verifier kinds (`[chain] verifiers` values).
ATTESTATION = "attestation"
OPTIMISTIC = "optimistic"
#: The `reason` label of `infera_requests_skipped` for a verified request this node cannot serve.
VERIFIER_NOT_SUPPORTED = "verifier_not_supported"

PROOFS_TABLE = """
CREATE TABLE IF NOT EXISTS proofs (
    chain_id     INTEGER NOT NULL,
    coordinator  TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,
    interval     INTEGER NOT NULL DEFAULT 0,
    proof        BLOB    NOT NULL,
    PRIMARY KEY (chain_id, coordinator, request_id, interval)
)
"""


def is_verified(verifier: str) -> bool:
    """Whether a request naming `verifier` (an address) asked for verification."""
    return int(verifier, 16) != 0


def kind_of(verifier: str, verifiers: Mapping[str, str]) -> str | None:
    """The kind the operator gave `verifier` in `verifiers` (checksummed address -> kind), or None if unlisted (or
    no verifier at all)."""
    if not is_verified(verifier):
        return None
    return verifiers.get(verifier)


def judge(model: ModelConfig, verifier: str, verifiers: Mapping[str, str]) -> Skip | None:
    """None if this node can serve a request for `model` naming `verifier` (the zero address: a plain request);
    else why not, as a `Skip` with kind `VERIFIER_NOT_SUPPORTED`."""
    if not is_verified(verifier):
        return None
    kind = verifiers.get(verifier)
    if kind is None:
        return Skip(
            VERIFIER_NOT_SUPPORTED,
            f"verified by {verifier}, which this node does not list in [chain] verifiers",
        )
    if kind == ATTESTATION and not model.attests:
        return Skip(
            VERIFIER_NOT_SUPPORTED,
            f"verified by attestation ({verifier}), but {model.name}'s container holds no attestation key here"
            " (set `attests = true` for it once it does)",
        )
    return None


class Proofs:
    """Reads and writes the `proofs` table of one store's (chain, coordinator)."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        store.execute(PROOFS_TABLE)

    def _key(self, request_id: int) -> tuple[int, str, str, int]:
        return (self._store.chain_id, self._store.coordinator, str(request_id), 0)

    def set(self, request_id: int, proof: bytes) -> None:
        """Records `proof` (bytes) for `request_id` (inside the caller's transaction, when it opened one)."""
        self._store.execute(
            upsert("proofs", ("chain_id", "coordinator", "request_id", "interval", "proof"), JOB_KEY),
            (*self._key(request_id), proof),
        )

    def get(self, request_id: int) -> bytes:
        """The proof recorded for `request_id`; empty bytes when none is."""
        rows = self._store.execute(
            "SELECT proof FROM proofs WHERE chain_id=? AND coordinator=? AND request_id=? AND interval=?",
            self._key(request_id),
        )
        return bytes(rows[0][0]) if rows else b""
