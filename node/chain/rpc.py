"""Connections to the chain's JSON-RPC endpoints."""

from __future__ import annotations

from web3 import AsyncHTTPProvider, AsyncWeb3, WebSocketProvider
from web3.exceptions import ContractLogicError

from node.chain.contracts import CoordinatorAbi
from node.errors import TxReverted


def http_client(url: str, timeout_s: float = 10.0) -> AsyncWeb3[AsyncHTTPProvider]:
    """An async web3 over HTTP; one per process, its session reused for every call."""
    return AsyncWeb3(AsyncHTTPProvider(url, request_kwargs={"timeout": timeout_s}))


def ws_client(url: str) -> AsyncWeb3[WebSocketProvider]:
    """An async web3 over a WebSocket; use as `async with ws_client(url) as w3:`."""
    return AsyncWeb3(WebSocketProvider(url, max_connection_retries=1))


def as_reverted(exc: ContractLogicError, abi: CoordinatorAbi, action: str) -> TxReverted:
    """Turns web3's revert into a `TxReverted` naming the coordinator's custom error."""
    data = exc.data if isinstance(exc.data, str) else None
    if data and data.startswith("0x") and len(data) >= 10:
        decoded = abi.decode_error(bytes.fromhex(data[2:]))
        return TxReverted(f"{action} reverted: {decoded}", error=decoded.name, args=decoded.args)
    return TxReverted(f"{action} reverted: {exc}")
