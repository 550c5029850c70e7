"""Connections to the chain's JSON-RPC endpoints, with failover across several URLs.

Guarantees: an endpoint failure (refused, reset, timeout, any HTTP status but 200, a body that is not a JSON-RPC
answer) on one endpoint moves the pool to the next one and the call is tried there; only when every endpoint failed
does the caller see `RpcUnavailable` (retryable). A contract revert or a JSON-RPC error answer is not an endpoint
failure and is raised as is (`RpcError`), and `classify` says what the caller should do about it (the taxonomy of
`node.errors.Action`). Calls are counted by method for the operator's metrics.

The clients carry none of web3's default middleware: the node fills in every transaction field itself, and the
validation middleware would ask `eth_chainId` again on every simulation (two calls out of five per delivery, counted
by `bench.node`).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from web3 import AsyncHTTPProvider, AsyncWeb3, WebSocketProvider
from web3.exceptions import BadResponseFormat, ContractLogicError, ProviderConnectionError, Web3RPCError

from node.chain.contracts import CoordinatorAbi
from node.chain.reverts import revert_data
from node.errors import Action, ChainError, EndpointFailed, InferaError, RpcUnavailable, TxReverted
from node.observability.conditions import CONDITIONS
from node.retry import retry_after_s

log = logging.getLogger(__name__)

T = TypeVar("T")


class EndpointError(EndpointFailed):
    """The endpoint answered, but not with a JSON-RPC answer: an HTTP status other than 200 (a rate limit's 429, a
    gateway's 502, an auth proxy's 403), or a body that is not JSON-RPC. `retry_after_s` is the endpoint's
    `Retry-After`, when it gave one."""

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


#: What a dead or flaky RPC raises through web3's providers and the raw client.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    TimeoutError,
    OSError,
    ProviderConnectionError,
    BadResponseFormat,
    EndpointError,
)

# What JSON-RPC error answers mean, by the words providers use (geth, erigon, nethermind, anvil, hosted gateways).
_RATE_LIMITED = ("rate limit", "too many requests", "limit exceeded", "exceeded the", "capacity", "throttl", "quota")
_TRANSIENT = (
    "header not found",
    "unknown block",
    "block not found",
    "missing trie node",
    "timeout",
    "timed out",
    "temporarily",
    "try again",
    "busy",
    "syncing",
    "unavailable",
    "internal error",
    "replacement transaction underpriced",
    "transaction underpriced",
    "already known",
    "nonce too high",
)
_KEY_BLOCKED = ("insufficient funds", "insufficient balance", "gas required exceeds allowance", "sender not authorized")
_ITEM_REFUSED = (
    "exceeds block gas limit",
    "exceeds the block gas limit",
    "block gas limit",
    "gas limit reached",
    "intrinsic gas too low",
    "intrinsic gas too high",
    "gas_limit >",
    "oversized",
    "too large",
    "too big",
    "exceeds the configured cap",
    "max initcode",
    "invalid request",
    "request entity",
)


def classify_answer(code: int, message: str) -> Action:
    """What a JSON-RPC error answer (`code`, `message`) means for the call that got it (see `node.errors.Action`)."""
    text = message.lower()
    if code == 3 or "revert" in text:
        return Action.REFUSED
    if code in (429, -32005) or any(s in text for s in _RATE_LIMITED):
        return Action.RETRY
    if any(s in text for s in _KEY_BLOCKED):
        return Action.KEY_BLOCKED
    if any(s in text for s in _ITEM_REFUSED) or code in (-32600, -32602):
        return Action.REFUSED
    if any(s in text for s in _TRANSIENT) or code in (-32603, -32002, -32004):
        return Action.RETRY
    if code == -32601:
        return Action.UNHEALTHY  # the endpoint lacks the method
    return Action.UNKNOWN


def classify(exc: BaseException) -> Action:
    """What the node should do about `exc`, raised by a call to the chain (any exception: an unforeseen one is
    `UNKNOWN`, retried with back-off, never fatal)."""
    if isinstance(exc, RpcError):  # before InferaError: its action depends on the answer's code and words
        return classify_answer(exc.code, exc.message)
    if isinstance(exc, InferaError):
        return exc.action
    if isinstance(exc, ContractLogicError):
        return Action.REFUSED
    if isinstance(exc, Web3RPCError):
        error = exc.rpc_response.get("error") if isinstance(exc.rpc_response, dict) else None
        code = int(error.get("code", 0)) if isinstance(error, dict) and isinstance(error.get("code"), int) else 0
        return classify_answer(code, str(exc))
    if is_transport_error(exc):
        return Action.UNHEALTHY
    return Action.UNKNOWN


def http_client(url: str, timeout_s: float = 10.0) -> AsyncWeb3[AsyncHTTPProvider]:
    """An async web3 over HTTP, without middleware; its session is reused for every call."""
    return AsyncWeb3(AsyncHTTPProvider(url, request_kwargs={"timeout": timeout_s}), middleware=[])


def ws_client(url: str) -> AsyncWeb3[WebSocketProvider]:
    """An async web3 over a WebSocket, without middleware; use as `async with ws_client(url) as w3:`."""
    return AsyncWeb3(WebSocketProvider(url, max_connection_retries=1), middleware=[])


class RpcError(ChainError):
    """The endpoint answered a raw call with a JSON-RPC error."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


def public_url(url: str) -> str:
    """`url` without credentials, path or query (where providers put API keys): what logs and pages may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def is_transport_error(exc: BaseException) -> bool:
    """Whether the endpoint failed (refused, reset, timed out, HTTP 5xx from a gateway), as opposed to answering
    with an error or a revert."""
    return isinstance(exc, TRANSPORT_ERRORS)


class RpcPool:
    """HTTP endpoints tried in order; the first that answers is used until it fails."""

    def __init__(self, urls: Sequence[str], *, timeout_s: float = 10.0) -> None:
        if not urls:
            raise ValueError("RpcPool needs at least one URL")
        self.urls = list(urls)
        self._clients = [http_client(u, timeout_s) for u in self.urls]
        self._current = 0
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        #: JSON-RPC calls made, by method (what `call` was told), for metrics and benchmarks.
        self.calls: Counter[str] = Counter()
        #: monotonic time of the last answer and of the last transport failure (any endpoint).
        self.last_ok = 0.0
        self.last_failure = 0.0

    @property
    def w3(self) -> AsyncWeb3[AsyncHTTPProvider]:
        return self._clients[self._current]

    @property
    def url(self) -> str:
        return self.urls[self._current]

    @property
    def reachable(self) -> bool:
        """Whether the last call answered (before any call: true)."""
        return self.last_ok >= self.last_failure

    async def call(self, method: str, fn: Callable[[AsyncWeb3[Any]], Awaitable[T]]) -> T:
        """Runs `fn(w3)` on the current endpoint, failing over to the others on a transport error."""
        return await self._failover(method, lambda: fn(self.w3))

    async def request(self, method: str, params: list[Any], *, timeout_s: float | None = None) -> Any:
        """A raw JSON-RPC call (no web3 formatting: the answer's `result` as sent), with the same failover; an error
        answer raises `RpcError`. `timeout_s` overrides the pool's for calls that wait on the chain."""
        if self._session is None:
            self._session = aiohttp.ClientSession(json_serialize=json.dumps)
        session = self._session
        timeout = aiohttp.ClientTimeout(total=timeout_s or self._timeout_s)

        async def attempt() -> Any:
            body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
            async with session.post(self.url, json=body, timeout=timeout) as resp:
                if resp.status != 200:
                    text = (await resp.content.read(200)).decode("utf-8", "replace")
                    raise EndpointError(
                        f"{method}: HTTP {resp.status} {text!r}",
                        status=resp.status,
                        retry_after_s=retry_after_s(resp.headers.get("Retry-After")),
                    )
                try:
                    answer = await resp.json(content_type=None)
                except (ValueError, RecursionError):  # not JSON, or nested past the recursion limit
                    raise EndpointError(f"{method}: the answer is not JSON") from None
            error = answer.get("error") if isinstance(answer, dict) else None
            if error is not None:
                if not isinstance(error, dict):
                    raise EndpointError(f"{method}: malformed error answer: {str(error)[:200]}")
                raise RpcError(method, _int(error.get("code")), str(error.get("message", ""))[:500], error.get("data"))
            if not isinstance(answer, dict) or "result" not in answer:
                raise EndpointError(f"{method}: not a JSON-RPC answer: {str(answer)[:200]}")
            return answer["result"]

        return await self._failover(method, attempt)

    async def _failover(self, method: str, attempt: Callable[[], Awaitable[T]]) -> T:
        errors = []
        retry_after = 0.0
        for _ in range(len(self._clients)):
            self.calls[method] += 1
            try:
                result = await attempt()
            except Exception as exc:
                if not is_transport_error(exc):
                    self.last_ok = time.monotonic()
                    CONDITIONS.count("rpc", classify(exc))
                    raise
                CONDITIONS.count("rpc", Action.UNHEALTHY)
                if isinstance(exc, EndpointError) and exc.retry_after_s:
                    retry_after = max(retry_after, exc.retry_after_s)
                self.last_failure = time.monotonic()
                shown = public_url(self.url)
                errors.append(f"{shown}: {type(exc).__name__}: {str(exc).replace(self.url, shown)}")
                if len(self._clients) > 1:
                    self._current = (self._current + 1) % len(self._clients)
                    log.warning(
                        "RPC %s failed (%s); failing over to %s", shown, type(exc).__name__, public_url(self.url)
                    )
                continue
            self.last_ok = time.monotonic()
            return result
        unavailable = RpcUnavailable(f"{method}: no RPC endpoint answered ({'; '.join(errors)})")
        unavailable.retry_after_s = retry_after or None
        raise unavailable

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        for client in self._clients:
            try:
                await client.provider.disconnect()
            except Exception:  # closing is best effort
                log.debug("closing %s failed", client.provider, exc_info=True)


def _int(value: Any) -> int:
    """A JSON-RPC error code as an int (0 when it is missing or not a number)."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def is_revert(exc: RpcError) -> bool:
    """Whether a raw call's error answer is the EVM reverting (as opposed to the endpoint refusing the call)."""
    return exc.code == 3 or "revert" in exc.message.lower()


def as_reverted(exc: ContractLogicError | RpcError, abi: CoordinatorAbi, action: str) -> TxReverted:
    """Turns a revert (web3's, or a raw call's error answer) into a `TxReverted` whose message names it
    (node/chain/reverts.py: an Infera contract's error with its arguments, `Error(string)`, `Panic`, or a selector
    said to be none of Infera's errors). Its `error` is the custom error's name (or "Error"); None for a panic, a
    selector none of Infera's contracts has, and a revert without data: the node cannot tell what those mean."""
    data = revert_data(exc)
    if data is None:
        return TxReverted(f"{action} reverted: {exc}")
    decoded = abi.decode_error(data)
    named = decoded.name if decoded.kind in ("custom", "error") else None
    return TxReverted(f"{action} reverted: {decoded}", error=named, args=decoded.args, text=str(decoded))
