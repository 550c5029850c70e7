"""Errors the node raises on purpose: one root, families, and retryability as data."""

from __future__ import annotations


class InferaError(Exception):
    """Root of every error the node raises on purpose."""

    #: Whether doing the same thing again later may succeed.
    retryable: bool = False


class ConfigError(InferaError, ValueError):
    """The config file or environment is invalid; the message names the key and the reason."""


class ChainError(InferaError):
    """Something went wrong talking to the chain."""


class RpcUnavailable(ChainError):
    """The RPC endpoint did not answer (connection refused, timeout, dropped socket)."""

    retryable = True


class TxReverted(ChainError):
    """A transaction (or its simulation) reverted; `error` is the decoded custom error name when known."""

    def __init__(self, message: str, *, error: str | None = None, args: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.error = error
        self.error_args = args


class ContainerError(InferaError):
    """A model container failed to produce an output."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ContainerRejected(ContainerError):
    """The container refused the input (HTTP 4xx): retrying the same input cannot succeed."""

    retryable = False


class ContainerLost(ContainerError):
    """The connection dropped in the middle of a call (the container died, or reset it): the input may have crashed
    the container, or another input that was in it at the same time did. Retryable; the scheduler runs the job's
    next attempts alone in its container so that only the input to blame uses up its attempts."""


class ContainerUnavailable(ContainerError):
    """The container could not be reached at all (connection refused): not the input's fault, so it does not use up
    an attempt; the job waits for the container to come back."""
