"""Operator actions on the chain: deploy the contracts, register and stake a node, send transactions.

Used by `infera deploy|node|request` and by the devnet. Guarantees: every transaction is simulated before it is
signed, so a revert is reported with its error name (decoded from the compiled ABI) and what to do, and no gas is
spent on it; a sent transaction is followed to its receipt; a revert or an unreachable RPC raises `OpsError`, whose
message is a whole sentence for the operator and never contains a key.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError

from node.chain.contracts import load_artifact, model_id
from node.chain.reverts import ErrorCatalog, revert_data
from node.chain.rpc import public_url
from node.chain.standing import decode_type_and_version, identify
from node.commands.console import spinner
from node.errors import InferaError


class OpsError(InferaError):
    """An operator action failed; the message says what happened and what to do."""


# -------------------------------------------------------------------------------------------------- amounts

_UNITS = {"wei": 0, "gwei": 9, "eth": 18, "ether": 18}


def parse_amount(text: str) -> int:
    """Wei from `1.5eth`, `10gwei` or `1000wei`. The unit is required: a bare `1` could mean 1 ETH or 1 wei."""
    raw = text.strip().lower().replace("_", "")
    unit = next((u for u in sorted(_UNITS, key=len, reverse=True) if raw.endswith(u)), None)
    bad = OpsError(f"{text!r} is not an amount with its unit: write e.g. 1.5eth, 10gwei or 1000wei")
    if unit is None:
        raise bad
    try:
        with localcontext(prec=200):  # exact for any uint256 amount (the default 28 digits would round)
            value = Decimal(raw.removesuffix(unit).strip()) * 10 ** _UNITS[unit]
    except InvalidOperation:
        raise bad from None
    if value != value.to_integral_value() or value < 0:
        raise OpsError(f"{text!r} is not a whole, non-negative number of wei")
    return int(value)


def eth(wei: int, places: int | None = None) -> str:
    """`1.5 ETH` for 1.5e18 wei: exact (or rounded to `places` decimals), without trailing zeros."""
    amount = Decimal(wei) / 10**18
    text = format(amount if places is None else round(amount, places), "f")
    return (text.rstrip("0").rstrip(".") if "." in text else text) + " ETH"


def utc(timestamp: int) -> str:
    """`2026-01-31 12:00:00 UTC` for a Unix `timestamp` in seconds (a block's time, an unlock time)."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------------------------------------- connection


def connect(urls: Sequence[str], *, timeout_s: float = 30) -> Web3:
    """A connection to the first of `urls` that answers `eth_chainId`."""
    problems = []
    for url in urls:
        w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout_s}))
        try:
            w3.eth.chain_id  # noqa: B018 (the call is the check)
            return w3
        except Exception as exc:
            problems.append(f"{public_url(url)} ({type(exc).__name__})")
    raise OpsError(f"cannot reach the RPC at {', '.join(problems)}: check the URL and that the chain node is up")


def chain_now(w3: Web3) -> int:
    """The chain's clock: the latest block's timestamp (what the contracts compare deadlines with)."""
    return int(w3.eth.get_block("latest")["timestamp"])


# ------------------------------------------------------------------------------------------------- reverts

# What to do about each contract error an operator can meet; `a` is the decoded error's arguments.
_HINTS: dict[str, Callable[[tuple[Any, ...]], str]] = {
    "AlreadyRegistered": lambda a: "this key is already registered; add stake with `infera node stake --amount …`",
    "StakeTooLow": lambda a: f"registering needs at least {eth(a[1])} (sent {eth(a[0])}); pass a larger --amount",
    "NotRegistered": lambda a: "this key is not registered; run `infera node register` first",
    "IsUnbonding": lambda a: (
        "this key is unbonding, so it cannot stake or unbond again; run `infera node withdraw` once it unlocks "
        "(`infera node status` says when), then register again"
    ),
    "NotUnbonding": lambda a: "this key is not unbonding; run `infera node unstake` first, withdraw after the delay",
    "UnbondingNotOver": lambda a: f"the stake unlocks at {utc(a[1])}; run `infera node withdraw` after that",
    "InvalidAmount": lambda a: "the amount must be above zero; pass a positive --amount",
    "TransferFailed": lambda a: f"{a[-2]} refused the payment; send it to an address that accepts ETH (--to)",
    "Unauthorized": lambda a: f"{a[0]} is not the contract's owner; use the owner's key",
    "InvalidParameter": lambda a: "a parameter is invalid: the owner must be set, the unbonding delay 1 s to 365 days",
    "NodeNotActive": lambda a: f"{a[0]} is not an active staked node; run `infera node register`",
    "FeeTooLow": lambda a: f"the coordinator's minimum fee is {a[1]} wei; pass --fee {a[1]}wei or more",
    "InvalidInputLength": lambda a: f"the input is {a[0]} bytes; the coordinator takes 1 to {a[1]}",
    "InvalidCallbackGasLimit": lambda a: f"--callback-gas must be between 1 and {a[1]}",
    "InsufficientBalance": lambda a: f"the balance on the coordinator is {a[3]} wei, {a[2]} needed; deposit first",
    "NothingToWithdraw": lambda a: "there is nothing to withdraw",
}


class Reverts:
    """Names a revert from the compiled ABIs of every Infera contract (node/chain/reverts.py), with what to do
    about it."""

    def __init__(self, artifacts_dir: Path | None = None) -> None:
        """Reads the errors from the forge artifacts in `artifacts_dir` (default coordinator_contract/out); raises
        `ConfigError` when there is no build there."""
        self._catalog = ErrorCatalog.from_artifacts(artifacts_dir)

    def explain(self, what: str, exc: Exception) -> OpsError:
        """An `OpsError` for `what` (e.g. "node register") that reverted in simulation with `exc`."""
        data = revert_data(exc)
        if data is None:
            return OpsError(f"{what} would revert: {getattr(exc, 'message', None) or exc}")
        decoded = self._catalog.decode(data)
        if decoded.kind in ("unknown", "empty") or decoded.problem is not None:
            return OpsError(f"{what} would revert with {decoded}")
        if decoded.kind == "error":
            return OpsError(f"{what} would revert: {decoded.args[0]}")
        hint = _HINTS.get(decoded.name or "")
        return OpsError(f"{what} reverted with {decoded}: {hint(decoded.args) if hint else 'see the contract docs'}")


# ----------------------------------------------------------------------------------------------- sending

_NONCE_RACE = ("nonce too low", "already known", "replacement transaction underpriced")


def send_tx(
    w3: Web3,
    fn: Any,
    sender: LocalAccount,
    *,
    what: str,
    reverts: Reverts,
    value: int = 0,
    timeout_s: float = 120,
    max_fee_wei: int | None = None,
) -> Any:
    """Simulates, signs and sends `fn` (a contract function call or constructor) from `sender`, and returns its
    receipt once mined. A nonce taken meanwhile by another sender of the same key (a running node) is retried."""
    for attempt in range(3):
        params: Any = {"from": sender.address, "value": value}
        params["nonce"] = w3.eth.get_transaction_count(sender.address, "pending")
        try:
            tx = fn.build_transaction(params)  # runs eth_estimateGas: a revert surfaces here, before signing
        except ContractLogicError as exc:
            raise reverts.explain(what, exc) from None
        except Web3RPCError as exc:
            raise _refused(w3, what, sender, value, exc) from None
        if max_fee_wei is not None and int(tx.get("maxFeePerGas", 0)) > max_fee_wei:
            tx["maxFeePerGas"] = max_fee_wei
            tx["maxPriorityFeePerGas"] = min(int(tx["maxPriorityFeePerGas"]), max_fee_wei)
        signed = sender.sign_transaction(tx)
        try:
            tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
            break
        except Web3RPCError as exc:
            if attempt < 2 and any(s in str(exc).lower() for s in _NONCE_RACE):
                continue
            raise _refused(w3, what, sender, value, exc) from None
    shown = "0x" + bytes(tx_hash).hex()
    with spinner(f"{what}: waiting for {shown} to be mined"):
        try:
            receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s, poll_latency=0.1)
        except TimeExhausted:
            raise OpsError(
                f"{what}: transaction {shown} was not mined within {timeout_s:.0f} s; it may still be: look it up "
                "before sending again (fees too low for the network?)"
            ) from None
    if receipt["status"] != 1:
        raise OpsError(f"{what}: transaction {shown} reverted on-chain in block {receipt['blockNumber']}")
    return receipt


def _refused(w3: Web3, what: str, sender: LocalAccount, value: int, exc: Web3RPCError) -> OpsError:
    message = str(getattr(exc, "message", None) or exc)
    if "insufficient funds" in message.lower():
        balance = w3.eth.get_balance(sender.address)
        return OpsError(
            f"{what}: {sender.address} holds {eth(balance)}, not enough for {eth(value)} plus gas; fund it first"
        )
    return OpsError(f"{what}: the RPC refused the transaction: {message}")


# ------------------------------------------------------------------------------------------------ deploying

#: Example consumer deployed by `deploy_contracts(example_model=...)`: asks a classifier for a sentence's sentiment.
EXAMPLE_CONSUMER = "SentimentConsumer"


@dataclass(frozen=True)
class Deployed:
    """The contracts of one deployment, and the block to read the coordinator's logs from."""

    chain_id: int
    registry: Contract
    coordinator: Contract
    consumer: Contract | None
    start_block: int
    owner: str
    #: The SubscriptionManager on the coordinator (None: not deployed by this call).
    subscription_manager: Contract | None = None

    def addresses(self) -> dict[str, Any]:
        """What `infera deploy` prints: everything a node config and a dApp need."""
        return {
            "chain_id": self.chain_id,
            "node_registry": self.registry.address,
            "coordinator": self.coordinator.address,
            **({"example_consumer": self.consumer.address} if self.consumer is not None else {}),
            **(
                {"subscription_manager": self.subscription_manager.address}
                if self.subscription_manager is not None
                else {}
            ),
            "start_block": self.start_block,
            "owner": self.owner,
        }


def deploy_contract(
    w3: Web3, name: str, deployer: LocalAccount, *args: Any, reverts: Reverts, artifacts_dir: Path | None = None
) -> Contract:
    """Deploys the forge artifact `name` with constructor `args`; returns it at its address."""
    artifact = load_artifact(name, artifacts_dir)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = send_tx(w3, factory.constructor(*args), deployer, what=f"deploy {name}", reverts=reverts)
    contract: Contract = w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi)
    return contract


def deploy_contracts(
    w3: Web3,
    deployer: LocalAccount,
    *,
    min_stake_wei: int,
    unbonding_delay_s: int,
    owner: str | None = None,
    example_model: str | None = None,
    artifacts_dir: Path | None = None,
) -> Deployed:
    """Deploys the NodeRegistry, the Coordinator on it, the SubscriptionManager on the Coordinator and, given
    `example_model`, the example consumer asking that model. `owner` (default: the deployer) may change their
    parameters. Raises `OpsError` naming the step that failed."""
    reverts = Reverts(artifacts_dir)
    owner = owner or deployer.address
    start_block = w3.eth.block_number

    def one(name: str, *args: Any) -> Contract:
        return deploy_contract(w3, name, deployer, *args, reverts=reverts, artifacts_dir=artifacts_dir)

    registry = one("NodeRegistry", owner, min_stake_wei, unbonding_delay_s)
    coordinator = one("Coordinator", owner, registry.address)
    manager = one("SubscriptionManager", coordinator.address)
    consumer = one(EXAMPLE_CONSUMER, coordinator.address, model_id(example_model)) if example_model else None
    return Deployed(w3.eth.chain_id, registry, coordinator, consumer, start_block, owner, manager)


# ----------------------------------------------------------------------------------------------- the node


@dataclass(frozen=True)
class Contracts:
    """A coordinator found on-chain from a node config, with its registry."""

    w3: Web3
    coordinator: Contract
    registry: Contract
    reverts: Reverts


def open_contracts(w3: Web3, coordinator_address: str, artifacts_dir: Path | None = None) -> Contracts:
    """The coordinator at `coordinator_address` and the registry it uses; `OpsError` (the node's own words,
    node/chain/standing.py `identify`) when the address holds no Coordinator this version speaks."""
    address = Web3.to_checksum_address(coordinator_address)
    code = bytes(w3.eth.get_code(address))
    coordinator = w3.eth.contract(address=address, abi=load_artifact("Coordinator", artifacts_dir).abi)
    named: str | None = None
    if code:
        selector = "0x" + keccak(text="typeAndVersion()")[:4].hex()
        try:
            named = decode_type_and_version(bytes(w3.eth.call({"to": address, "data": selector})))  # type: ignore[typeddict-item]
        except ContractLogicError:  # a revert: the contract has no such function, it is not ours
            named = None
        except Exception as exc:  # the RPC failed (a rate limit, a timeout): no verdict on the address
            raise OpsError(
                f"cannot read typeAndVersion() of {address} from the RPC ({type(exc).__name__}): try again"
            ) from None
    problem = identify(address, int(w3.eth.chain_id), code, named)
    if problem is not None:
        raise OpsError(problem)
    registry_address = coordinator.functions.registry().call()
    registry = w3.eth.contract(address=registry_address, abi=load_artifact("NodeRegistry", artifacts_dir).abi)
    return Contracts(w3, coordinator, registry, Reverts(artifacts_dir))


@dataclass(frozen=True)
class NodeStatus:
    """A node's standing in the registry, read at one block."""

    address: str
    registry: str
    stake_wei: int
    active: bool
    unlock_at: int
    min_stake_wei: int
    unbonding_delay_s: int
    balance_wei: int
    earned_wei: int
    chain_time: int

    @property
    def registered(self) -> bool:
        """Whether the node has ever staked and not withdrawn: a stake, or an unbonding one waiting to unlock."""
        return self.stake_wei > 0 or self.unlock_at > 0

    def as_dict(self) -> dict[str, Any]:
        """The status for `--json`: amounts in wei as decimal strings (JSON numbers lose precision past 2^53),
        `unlock_at` a Unix time in seconds or None when not unbonding, `unbonding_delay_s` in seconds."""
        return {
            "address": self.address,
            "registry": self.registry,
            "registered": self.registered,
            "active": self.active,
            "stake_wei": str(self.stake_wei),
            "unlock_at": self.unlock_at or None,
            "withdrawable": bool(self.unlock_at) and self.chain_time >= self.unlock_at,
            "min_stake_wei": str(self.min_stake_wei),
            "unbonding_delay_s": self.unbonding_delay_s,
            "balance_wei": str(self.balance_wei),
            "earned_wei": str(self.earned_wei),
        }

    def lines(self) -> list[str]:
        """The status as an operator reads it."""
        if not self.registered:
            standing = f"not registered (register with at least {eth(self.min_stake_wei)})"
        elif self.unlock_at == 0:
            standing = "active" if self.active else f"inactive: stake below the minimum of {eth(self.min_stake_wei)}"
        elif self.chain_time >= self.unlock_at:
            standing = f"unbonding, unlocked since {utc(self.unlock_at)}: withdraw with `infera node withdraw`"
        else:
            left = self.unlock_at - self.chain_time
            standing = f"unbonding, unlocks at {utc(self.unlock_at)} (in {_duration(left)})"
        return [
            f"node      {self.address}",
            f"registry  {self.registry}",
            f"status    {standing}",
            f"stake     {eth(self.stake_wei)}",
            f"balance   {eth(self.balance_wei, 6)} (gas and stake are paid from it)",
            f"earned    {eth(self.earned_wei)} (fees held by the coordinator for this node)",
        ]


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


def node_status(c: Contracts, address: str) -> NodeStatus:
    """`address`'s standing in the registry, its balance and what the coordinator holds for it, read from the
    chain now (only reads). A failed call raises what web3 raises, not `OpsError`."""
    registry, w3 = c.registry.functions, c.w3
    return NodeStatus(
        address=address,
        registry=c.registry.address,
        stake_wei=int(registry.stakeOf(address).call()),
        active=bool(registry.isActive(address).call()),
        unlock_at=int(registry.unlockAt(address).call()),
        min_stake_wei=int(registry.minStake().call()),
        unbonding_delay_s=int(registry.unbondingDelay().call()),
        balance_wei=int(w3.eth.get_balance(Web3.to_checksum_address(address))),
        earned_wei=int(c.coordinator.functions.balanceOf("0x" + "00" * 20, address).call()),
        chain_time=chain_now(w3),
    )


def wait_for(check: Callable[[], Any], *, timeout_s: float, interval_s: float = 0.25) -> Any:
    """Polls `check` until it returns something other than None; None if `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)
