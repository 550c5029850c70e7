"""Every error the node raises on purpose has one root, `node.errors.InferaError`, so a caller can tell the node's own
errors from a bug or a library's, and each carries what to do about it (`retryable`, `action`) as data."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator

import pytest

import node
from node.chain.heads import WsStale
from node.chain.rpc import EndpointError, RpcError, classify
from node.errors import Action, InferaError, InputRejected, Overloaded


def node_modules() -> Iterator[str]:
    """The dotted name of every module of the `node` package, imported (an import error fails the test)."""
    yield node.__name__
    for info in pkgutil.walk_packages(node.__path__, prefix=f"{node.__name__}."):
        yield info.name


def exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in a module of `node` (not ones a module merely imports)."""
    found: dict[str, type[BaseException]] = {}
    for name in node_modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def test_the_walk_finds_the_modules_and_errors_it_must() -> None:
    """A guard on the guard: a walk that found nothing would pass the test below vacuously."""
    modules = set(node_modules())
    assert {"node.errors", "node.chain.rpc", "node.devnet.processes", "node.observability.metrics"} <= modules
    names = {cls.__name__ for cls in exception_classes()}
    assert {"InferaError", "RpcError", "EndpointError", "WsStale", "JobsBusy", "DevnetError", "OpsError"} <= names


@pytest.mark.parametrize("cls", exception_classes(), ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_every_error_defined_in_node_derives_from_infera_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, InferaError), f"{cls.__module__}.{cls.__qualname__} does not derive from InferaError"


@pytest.mark.parametrize(
    ("name", "builtin"),
    [
        ("node.errors.ConfigError", ValueError),
        ("node.errors.InputRejected", ValueError),
        ("node.api.jobs.JobInputError", ValueError),
        ("node.chain.heads.WsStale", ConnectionError),
        ("node.devnet.processes.DevnetError", RuntimeError),
    ],
)
def test_errors_keep_the_builtin_base_their_callers_catch(name: str, builtin: type[BaseException]) -> None:
    module, _, attr = name.rpartition(".")
    assert issubclass(getattr(importlib.import_module(module), attr), builtin)


def test_deriving_from_the_root_keeps_the_rpc_classification() -> None:
    """`classify` answers an `InferaError` with its `action`: an RPC error answer is still judged by its code and
    words, an endpoint's failure still fails over."""
    assert classify(RpcError("eth_sendRawTransaction", -32000, "insufficient funds for gas")) is Action.KEY_BLOCKED
    assert classify(RpcError("eth_getLogs", 429, "rate limit exceeded")) is Action.RETRY
    assert classify(RpcError("eth_call", 3, "execution reverted")) is Action.REFUSED
    assert classify(EndpointError("eth_call: HTTP 502", status=502)) is Action.UNHEALTHY
    assert classify(WsStale("no new head for 30 s")) is Action.UNHEALTHY


def test_families_say_what_to_do() -> None:
    assert Overloaded.retryable
    assert Overloaded.action is Action.RETRY
    assert not InputRejected.retryable
    assert InputRejected.action is Action.REFUSED
