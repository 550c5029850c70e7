"""Errors the node raises on purpose: one root, families, and what to do about each as data.

Every answer from outside the process (an RPC endpoint, a model container, a consumer's request) is classified once,
at the edge that received it, into an `Action`; the core acts on the action, never on the raw answer. No action ends
the process: the worst an outside answer can do is fail the one item it was about, after a bounded effort.
"""

from __future__ import annotations

import enum


class Action(enum.Enum):
    """What the node does about an answer from outside (the taxonomy in docs/RELIABILITY.md).

    - `RETRY`: transient (rate limited, no block yet, busy): the same thing again after a capped back-off.
    - `REFUSED`: this item can never succeed as it is (the coordinator's revert, an oversized payload, a 4xx from a
      container for this input): it ends in a failure report or a skip, never another identical attempt.
    - `KEY_BLOCKED`: this sending key cannot send now (no funds, its nonce taken by someone else): the key pauses
      with back-off and says why on `/readyz`; other keys go on.
    - `UNHEALTHY`: the endpoint itself is broken (transport error, 5xx, a body that is not JSON-RPC): fail over to
      the next endpoint and retry there.
    - `UNKNOWN`: an answer nobody classified: retried with capped back-off and counted (metric
      `infera_outside_answers_total{action="unknown"}`), never fatal, never a hot loop.
    """

    RETRY = "retry"
    REFUSED = "refused"
    KEY_BLOCKED = "key_blocked"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class InferaError(Exception):
    """Root of every error the node raises on purpose."""

    #: Whether doing the same thing again later may succeed.
    retryable: bool = False
    #: What the node does about it (see `Action`).
    action: Action = Action.UNKNOWN


class ConfigError(InferaError, ValueError):
    """The config file or environment is invalid; the message names the key and the reason."""

    action = Action.REFUSED
    #: Whether the message may quote what the operator typed (a pasted private key, say): printed redacted then
    #: (`node.config_hints.redact`). False for a finding of the node's own, whose hashes must show.
    echoes_input = True


class ChainError(InferaError):
    """Something went wrong talking to the chain."""


class RpcUnavailable(ChainError):
    """The RPC endpoint did not answer (connection refused, timeout, dropped socket, 5xx, a body that is not a
    JSON-RPC answer), on every endpoint of the pool."""

    retryable = True
    action = Action.UNHEALTHY
    #: The longest `Retry-After` an endpoint asked for, in seconds (None: none asked).
    retry_after_s: float | None = None


class EndpointFailed(ChainError):
    """One RPC endpoint failed the call itself (an HTTP error status, a body that is not JSON-RPC, a WebSocket that
    went stale), as opposed to the chain refusing it: fail over to the next endpoint and retry there."""

    retryable = True
    action = Action.UNHEALTHY


class TxReverted(ChainError):
    """A transaction (or its simulation) reverted. `error`: the decoded custom error's name when known (what the
    node's rules compare); `error_text`: that error as a person reads it, with its arguments (e.g.
    `OutputTooLarge(length=300, maxOutputBytes=256)`: what messages and logs show), `error` when it was not decoded
    from data, None with `error`."""

    action = Action.REFUSED

    def __init__(
        self, message: str, *, error: str | None = None, args: tuple[object, ...] = (), text: str | None = None
    ) -> None:
        super().__init__(message)
        self.error = error
        self.error_args = args
        self.error_text = text if text is not None and error is not None else error


class ContainerError(InferaError):
    """A model container failed to produce an output. `retry_after_s`: how long the container asked to be left
    alone (HTTP `Retry-After`), when it said."""

    retryable = True
    action = Action.RETRY

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class ContainerRejected(ContainerError):
    """The container refused the input (HTTP 4xx other than 408/425/429): retrying the same input cannot succeed."""

    retryable = False
    action = Action.REFUSED


class ProofUnavailable(ContainerRejected):
    """The request needs an attestation and the model's container cannot give one (it holds no attestation key, or
    answered without a proof): the operator's set-up, not the request's fault, so never reported on-chain."""


class ContainerLost(ContainerError):
    """The connection dropped in the middle of a call (the container died, or reset it): the input may have crashed
    the container, or another input that was in it at the same time did. Retryable; the scheduler runs the job's
    next attempts alone in its container so that only the input to blame uses up its attempts."""


class ContainerUnavailable(ContainerError):
    """The container could not be reached at all (connection refused): not the input's fault, so it does not use up
    an attempt; the job waits for the container to come back."""

    action = Action.UNHEALTHY


class InputRejected(InferaError, ValueError):
    """A client's submission to the node's API cannot be accepted as it is (HTTP 4xx); `str()` says what to fix.
    Still a `ValueError`, for callers that validate with it."""

    action = Action.REFUSED


class Overloaded(InferaError):
    """Too much is in progress to take more now (HTTP 503): the same submission may succeed later."""

    retryable = True
    action = Action.RETRY


def short(text: object, limit: int = 160) -> str:
    """`text` as one line of at most `limit` characters (an ellipsis marks a cut): what a log line or a failure
    report may quote of an outside answer."""
    # Lone surrogates (JSON's "\\ud800") can be neither stored nor encoded: replaced, so a quote never raises later.
    line = " ".join(str(text).encode("utf-8", "replace").decode("utf-8").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
