"""The node's standing on-chain: whether `coordinator_address` holds our Coordinator, whether each key is registered,
active and staked at the registry's minimum, whether its balance pays for enough deliveries at the current gas price,
and what the coordinator holds for it. These decide whether a node that runs can also earn.

Read once at start (`check_identity`: a wrong coordinator stops `infera run`, it is never "served") and every
`STANDING_REFRESH_S` after (`Standing.run`), for `/readyz`, `/status` and `/metrics`. Every read is a raw `eth_call`
decoded with eth-abi, so an absurd answer fails one read (the previous standing is kept and the failure shown), never
the node.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from node.chain.reverts import escape_text
from node.chain.rpc import RpcError, RpcPool
from node.config import ETH_TOKEN
from node.errors import ConfigError

log = logging.getLogger(__name__)

#: Seconds between two reads of the registry, the balances and the gas price.
STANDING_REFRESH_S = 15.0
#: Refreshes missed (failed reads) after which the standing is stale: readiness fails rather than show old figures.
STALE_AFTER_READS = 3
#: What our Coordinator answers to `typeAndVersion()`, before its version.
COORDINATOR_TYPE = "InferaCoordinator"
#: The Coordinator major versions this node speaks (semver: a new major may change the events or `deliver`).
SUPPORTED_MAJORS = frozenset({0})
#: Gas of one delivery besides the consumer's callback limit: `deliver` used 134,705 gas (median of 2,020 calls; the
#: tests' small callbacks included; 276,815 at most, for large outputs) in `forge test --gas-report --match-contract
#: CoordinatorDeliverTest`, plus 21,000 for the transaction and its calldata. An estimate for readiness, not a bound.
DELIVERY_OVERHEAD_GAS = 150_000
#: What the other Infera contracts answer to `typeAndVersion()`, with what to do when one is given as the coordinator.
_OTHER_TYPES = {
    "InferaNodeRegistry": "the NodeRegistry, not the Coordinator",
    "InferaSubscriptionManager": "the SubscriptionManager, not the Coordinator",
}


class CoordinatorMismatch(ConfigError):
    """`chain.coordinator_address` does not hold a Coordinator this node can serve (no code, another contract, an
    unsupported version): raised at start, so the node stops instead of running ready and earning nothing."""


def _hex_bytes(what: str, answer: Any) -> bytes:
    """`answer` (a JSON-RPC result) as bytes; ValueError when it is not a 0x-hex string (an endpoint's garbage)."""
    if not isinstance(answer, str) or not answer.startswith("0x"):
        raise ValueError(f"{what} answered {str(answer)[:60]!r}, not hex")
    return bytes.fromhex(answer[2:])


def _quantity(what: str, answer: Any) -> int:
    """`answer` (a JSON-RPC quantity, `0x`-hex) as an int; ValueError when it is not one or is absurd (a balance or
    price of 2^256 wei or more)."""
    if not isinstance(answer, str) or not answer.startswith("0x"):
        raise ValueError(f"{what} answered {str(answer)[:60]!r}, not a quantity")
    value = int(answer, 16)
    if value >= 2**256:
        raise ValueError(f"{what} answered {answer[:70]}: more than any account can hold")
    return value


def iso_utc(unix_s: float) -> str:
    """`unix_s` (seconds) as ISO-8601 UTC to the second, e.g. `2026-12-05T08:30:00Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_s))


_TYPE_AND_VERSION = re.compile(r"(?P<type>Infera[A-Za-z]+) (?P<major>\d{1,6})\.\d{1,6}\.\d{1,6}")


def _selector(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


def identify(address: str, chain_id: int, code: bytes, type_and_version: str | None) -> str | None:
    """None when the contract at `address` (its runtime `code`, and its `typeAndVersion()` answer or None when the
    call reverted or answered no string) is a Coordinator of a supported version; else the problem, one line that
    says what to do. Only a string of the form `Infera<Type> <major>.<minor>.<patch>` names an Infera contract."""
    where = f"chain.coordinator_address: {address} on chain {chain_id}"
    fix = "give the Coordinator's address (`infera deploy` prints it as coordinator=...; devnet: devnet.json)"
    if not code:
        return f"{where} holds no contract (wrong address, or an RPC of another chain?); {fix}"
    if type_and_version is None:
        return f"{where} is not an Infera Coordinator (it does not answer typeAndVersion()); {fix}"
    named = _TYPE_AND_VERSION.fullmatch(type_and_version)
    if named is None or (named["type"] != COORDINATOR_TYPE and named["type"] not in _OTHER_TYPES):
        shown = escape_text(type_and_version[:80])
        return f'{where} is not an Infera Coordinator (typeAndVersion() is "{shown}"); {fix}'
    if named["type"] in _OTHER_TYPES:
        return f"{where} is {_OTHER_TYPES[named['type']]}; {fix}"
    if int(named["major"]) not in SUPPORTED_MAJORS:
        supported = ", ".join(f"{m}.x" for m in sorted(SUPPORTED_MAJORS))
        return (
            f"{where} is {type_and_version}, a version this node does not speak (it speaks {supported});"
            " upgrade the node (pip install -U infera) or point it at a supported Coordinator"
        )
    return None


def decode_type_and_version(answer: bytes) -> str | None:
    """The string an `eth_call` of `typeAndVersion()` returned (its raw return data), or None when the data is not
    one ABI-encoded string (an empty answer, a contract without the function's fallback, garbage)."""
    try:
        return str(abi_decode(["string"], answer)[0])
    except Exception:  # any decoding failure: not an Infera contract's answer
        return None


def is_revert(exc: BaseException) -> bool:
    """Whether a JSON-RPC error answer is the call's revert (code 3, or a message saying it reverted), not the
    endpoint's failure (a rate limit, a timeout, an unknown block): only a revert says what the contract is."""
    return isinstance(exc, RpcError) and (exc.code == 3 or "revert" in str(exc).lower())


def eth_exact(wei: int) -> str:
    """`wei` as ETH, every digit kept and no trailing zeros (`1.5000001234`): what a command can be given back."""
    whole, frac = divmod(wei, 10**18)
    return f"{whole}.{frac:018d}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class KeyStanding:
    """One node key at one read: its registry record (registered, active, stake in wei, `unlock_at` a Unix time, 0
    while bonded), its ether balance in wei, and how many deliveries that balance pays for at the gas price of the
    read. `key_env`: the env variable the key comes from when it is not the config's main key (its commands need
    `--key-env` then)."""

    address: str
    registered: bool
    active: bool
    stake_wei: int
    unlock_at: int
    balance_wei: int
    deliveries_covered: int
    key_env: str | None = None

    def problem(self, min_stake_wei: int) -> str | None:
        """Why this key cannot earn, with the command that fixes it (amounts exact); None when it is active."""
        if self.active:
            return None
        flag = f" --key-env {self.key_env}" if self.key_env else ""
        if self.unlock_at:
            return (
                f"{self.address} is unbonding (its stake unlocks at {iso_utc(self.unlock_at)}): it cannot serve;"
                f" `infera node withdraw{flag}` after that, then `infera node register{flag}` again"
            )
        if not self.registered:
            return (
                f"{self.address} is not registered in the NodeRegistry: fund it, then run `infera node register{flag}`"
                f" (stakes the minimum, {eth_exact(min_stake_wei)} ETH)"
            )
        if self.stake_wei < min_stake_wei:
            return (
                f"{self.address} has a stake of {eth_exact(self.stake_wei)} ETH, below the registry's minimum"
                f" {eth_exact(min_stake_wei)} ETH (slashed, or the minimum was raised): run"
                f" `infera node stake --amount {eth_exact(min_stake_wei - self.stake_wei)}eth{flag}`"
            )
        return f"{self.address} is not an active node in the NodeRegistry: `infera node status{flag}` says why"


@dataclass
class Standing:
    """Reads the node's standing now and then (`run`) and says what keeps it from earning (`problems`).

    `addresses`: the node's keys (checksummed); `tokens`: the payment tokens whose unclaimed fees are shown (the zero
    address for ETH); `delivery_gas`: gas one delivery costs the node, its callback included; `min_deliveries`: a key
    whose balance pays for fewer deliveries at the current gas price (capped at `max_fee_per_gas_wei`) keeps the node
    from being ready (0: not checked)."""

    rpc: RpcPool
    coordinator: str
    addresses: Sequence[str]
    tokens: Sequence[str]
    delivery_gas: int
    min_deliveries: int
    max_fee_per_gas_wei: int
    #: address → the env variable of each key that is not the config's main key (for the commands' `--key-env`).
    key_envs: dict[str, str] = field(default_factory=dict)
    registry: str | None = None
    #: The Coordinator's `typeAndVersion()`, once `check_identity` passed.
    type_and_version: str | None = None
    min_stake_wei: int | None = None
    gas_price_wei: int | None = None
    keys: dict[str, KeyStanding] = field(default_factory=dict)
    #: token → unclaimed fees in the token's smallest unit, summed over the node's keys (Coordinator's `balanceOf`).
    unclaimed: dict[str, int] = field(default_factory=dict)
    #: Unix time of the last complete read (None before the first).
    as_of: float | None = None
    #: Why the last read failed (None when it did not): the standing shown is then the one of `as_of`.
    read_error: str | None = None
    #: Unix time the reads started (what "not read since" counts from before the first read).
    started_at: float = field(default_factory=time.time)

    async def _call(
        self, to: str, signature: str, types: Sequence[str], args: Sequence[Any], out: Sequence[str]
    ) -> Any:
        data = _selector(signature) + abi_encode(list(types), list(args)).hex()
        answer = await self.rpc.request("eth_call", [{"to": to, "data": data}, "latest"])
        values = abi_decode(list(out), _hex_bytes(f"eth_call {signature}", answer))
        return values[0] if len(out) == 1 else values

    async def check_identity(self, chain_id: int) -> None:
        """Reads the coordinator's code and `typeAndVersion()`, and its registry. Raises `CoordinatorMismatch` when
        the address holds no Coordinator of a supported version (what the node then says, and stops). Only definite
        answers decide that: no code, a revert, return data that is not a string. An RPC failure (unreachable, a
        rate limit, an error that is not a revert, an answer that is not hex) raises what it raised, or ValueError,
        and the caller asks again."""
        code = _hex_bytes("eth_getCode", await self.rpc.request("eth_getCode", [self.coordinator, "latest"]))
        named: str | None = None
        if code:
            try:
                answer = await self.rpc.request(
                    "eth_call", [{"to": self.coordinator, "data": _selector("typeAndVersion()")}, "latest"]
                )
            except RpcError as exc:
                if not is_revert(exc):
                    raise
            else:
                named = decode_type_and_version(_hex_bytes("eth_call typeAndVersion()", answer))
        problem = identify(self.coordinator, chain_id, code, named)
        if problem is not None:
            raise CoordinatorMismatch(problem)
        self.type_and_version = named
        answer = await self.rpc.request(
            "eth_call", [{"to": self.coordinator, "data": _selector("registry()")}, "latest"]
        )
        try:
            self.registry = to_checksum_address(abi_decode(["address"], _hex_bytes("eth_call registry()", answer))[0])
        except (ValueError, TypeError, DecodingError):
            raise ValueError(f"the coordinator's registry() answered {str(answer)[:80]!r}, not an address") from None
        log.info("coordinator %s is %s; registry %s", self.coordinator, named, self.registry)

    async def refresh(self) -> None:
        """Reads the minimum stake, the gas price, and for each key its registry record, balance and unclaimed fees.
        On any failure the previous standing is kept and `read_error` says why."""
        try:
            if self.registry is None:
                raise ValueError("the coordinator's registry is not known yet")
            min_stake = int(await self._call(self.registry, "minStake()", [], [], ["uint256"]))
            price = _quantity("eth_gasPrice", await self.rpc.request("eth_gasPrice", []))
            keys: dict[str, KeyStanding] = {}
            unclaimed = dict.fromkeys(self.tokens, 0)
            for address in self.addresses:
                registry, one = self.registry, ["address"]
                registered = bool(await self._call(registry, "isRegistered(address)", one, [address], ["bool"]))
                active = bool(await self._call(registry, "isActive(address)", one, [address], ["bool"]))
                stake = int(await self._call(registry, "stakeOf(address)", one, [address], ["uint256"]))
                unlock = int(await self._call(registry, "unlockAt(address)", one, [address], ["uint64"]))
                balance = _quantity("eth_getBalance", await self.rpc.request("eth_getBalance", [address, "latest"]))
                covered = balance // (max(1, price) * self.delivery_gas)
                keys[address] = KeyStanding(
                    address, registered, active, stake, unlock, balance, covered, self.key_envs.get(address)
                )
                for token in self.tokens:
                    unclaimed[token] += int(
                        await self._call(
                            self.coordinator,
                            "balanceOf(address,address)",
                            ["address", "address"],
                            [token, address],
                            ["uint256"],
                        )
                    )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any RPC answer: shown as stale standing, never a crash
            if self.read_error is None:
                log.warning("cannot read the node's standing on-chain: %s: %s", type(exc).__name__, exc)
            self.read_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            return
        for address, key in keys.items():
            old = self.keys.get(address)
            if old is None or old.active != key.active:
                say = log.info if key.active else log.error
                say("%s: %s", address, "active in the registry" if key.active else key.problem(min_stake))
        self.min_stake_wei, self.gas_price_wei, self.keys, self.unclaimed = min_stake, price, keys, unclaimed
        self.as_of, self.read_error = time.time(), None

    async def run(self, interval_s: float = STANDING_REFRESH_S) -> None:
        """Refreshes now and then every `interval_s` seconds, until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s)

    def problems(self, now: float | None = None) -> dict[str, list[str]]:
        """What keeps the node from earning, by readiness check (`stake`, `balance`), one line each; a check with no
        line passes. A standing not read for `STALE_AFTER_READS` refreshes (the RPC answers garbage to these reads,
        or nothing) fails both checks, naming when it was last read and why not since: old figures are not shown as
        current. A gas price above `chain.max_fee_per_gas_wei` fails `balance` too: no delivery goes out at it."""
        now = time.time() if now is None else now
        last = self.as_of if self.as_of is not None else self.started_at
        if now - last > STALE_AFTER_READS * STANDING_REFRESH_S or self.as_of is None:
            when = "never read" if self.as_of is None else f"not read since {iso_utc(self.as_of)}"
            why = f"the node's standing (registry, balances) is {when}" + (
                f": {self.read_error}" if self.read_error else ""
            )
            if self.as_of is None and now - last <= STALE_AFTER_READS * STANDING_REFRESH_S:
                why = "the node's standing (registry, balances) is not read yet"
            return {"stake": [why], "balance": [why]}
        stake = [p for k in self.keys.values() if (p := k.problem(self.min_stake_wei or 0)) is not None]
        balance = []
        price = self.gas_price_wei or 0
        if price > self.max_fee_per_gas_wei:
            balance.append(
                f"the chain's gas price is {price / 1e9:.4g} gwei, above chain.max_fee_per_gas_wei"
                f" ({self.max_fee_per_gas_wei / 1e9:.4g} gwei): deliveries wait until it falls; raise the cap if the"
                " fees still pay for it"
            )
        if self.min_deliveries:
            for key in self.keys.values():
                if key.deliveries_covered < self.min_deliveries:
                    balance.append(
                        f"{key.address} holds {eth_exact(key.balance_wei)} ETH: {key.deliveries_covered} deliveries"
                        f" at {price / 1e9:.4g} gwei x {self.delivery_gas} gas, fewer than"
                        f" api.min_deliveries_covered = {self.min_deliveries}; send it ETH"
                    )
        return {"stake": stake, "balance": balance}

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready (wei as decimal strings): `coordinator` (its typeAndVersion), `registry`, `min_stake_wei`,
        `gas_price_wei`, `delivery_gas`, `keys` (address → active, stake_wei, unlock_at, balance_wei,
        deliveries_covered), `unclaimed` (token → smallest units; `ETH` for the zero address), `as_of` (Unix time)
        and `read_error`."""
        return {
            "coordinator": self.type_and_version,
            "registry": self.registry,
            "min_stake_wei": None if self.min_stake_wei is None else str(self.min_stake_wei),
            "gas_price_wei": None if self.gas_price_wei is None else str(self.gas_price_wei),
            "delivery_gas": self.delivery_gas,
            "keys": {
                a: {
                    "registered": k.registered,
                    "active": k.active,
                    "stake_wei": str(k.stake_wei),
                    "unlock_at": k.unlock_at or None,
                    "balance_wei": str(k.balance_wei),
                    "deliveries_covered": k.deliveries_covered,
                }
                for a, k in self.keys.items()
            },
            "unclaimed": {("ETH" if t == ETH_TOKEN else t): str(v) for t, v in self.unclaimed.items()},
            "as_of": self.as_of,
            "as_of_iso": None if self.as_of is None else iso_utc(self.as_of),
            "read_error": self.read_error,
            "max_fee_per_gas_wei": str(self.max_fee_per_gas_wei),
        }
