"""`infera node earnings` and `infera node claim`: the fees the node's key earned, and withdrawing them.

Fees are credited, never pushed: each delivery adds `feePerNode` (less the protocol's cut) to the node's balance in
the request's token inside the contract that escrowed it (the Coordinator for requests; the SubscriptionManager for
subscription intervals). `earnings` reads those balances (`balanceOf(token, node)`) for ETH and every token a model
of the config accepts (plus `--token`); `claim` sends `withdraw(token, to)` for each non-zero one, each simulated
first, so a claim that would revert spends no gas and is named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from web3 import Web3

from node.commands import CONFIG, FORCE, KEY_ENV, load_config_file, load_signer, node_running, open_chain
from node.commands.console import note, warn
from node.commands.stake import node_app
from node.config import ETH_TOKEN, NodeConfig
from node.errors import ConfigError

if TYPE_CHECKING:
    from web3.contract import Contract

    from node.commands.chain_ops import Contracts

TOKEN_OPTION = typer.Option(None, "--token", help="also this ERC-20 (address); `ETH` for ether")


@dataclass(frozen=True)
class Balance:
    """What one contract holds for the node in one token: `amount` in the token's smallest unit (wei for ETH)."""

    contract: str
    address: str
    token: str
    amount: int

    def line(self) -> str:
        """One line for a person: the amount (in ETH for ether) and where it is held."""
        from node.commands.chain_ops import eth

        shown = eth(self.amount) if self.token == ETH_TOKEN else f"{self.amount} (smallest units of {self.token})"
        return f"{self.contract:<20} {shown}"


def tokens_of(cfg: NodeConfig, extra: list[str] | None) -> list[str]:
    """ETH, every token a served model accepts, and `extra` (addresses or `ETH`), checksummed and in that order;
    raises `ConfigError` for an entry of `extra` that is not an address."""
    tokens = [ETH_TOKEN]
    for model in cfg.models:
        tokens += list(model.accepted_payments)
    for token in extra or []:
        if token.upper() == "ETH":
            tokens.append(ETH_TOKEN)
        elif Web3.is_address(token):
            tokens.append(Web3.to_checksum_address(token))
        else:
            raise ConfigError(f"--token: {token!r} is neither ETH nor a token address")
    return list(dict.fromkeys(tokens))


def escrows(cfg: NodeConfig, c: Contracts) -> list[tuple[str, Contract]]:
    """The contracts that credit the node's fees: (name, contract). The SubscriptionManager is included when the
    config names one."""
    found: list[tuple[str, Contract]] = [("Coordinator", c.coordinator)]
    manager = getattr(cfg.chain, "subscription_manager_address", None)
    if manager is not None:
        from node.chain.contracts import load_artifact

        abi = load_artifact("SubscriptionManager", cfg.chain.artifacts_dir).abi
        found.append(("SubscriptionManager", c.w3.eth.contract(address=Web3.to_checksum_address(manager), abi=abi)))
    return found


def balances(cfg: NodeConfig, c: Contracts, node: str, tokens: list[str]) -> list[Balance]:
    """The node's balance in each of `tokens` in each contract of `escrows` (zeros included)."""
    return [
        Balance(name, contract.address, token, int(contract.functions.balanceOf(token, node).call()))
        for name, contract in escrows(cfg, c)
        for token in tokens
    ]


@node_app.command("earnings")
def node_earnings(
    config: Path = CONFIG,
    key_env: str | None = KEY_ENV,
    token: list[str] | None = TOKEN_OPTION,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """The fees the node's key has earned and not yet claimed, per token and contract."""
    from node.keys import keystore_address

    cfg = load_config_file(config)
    keystore = cfg.wallet.keystore_path if key_env is None else None
    address = keystore_address(keystore.expanduser()) if keystore is not None else None
    if address is None:
        address = load_signer(cfg, key_env, None, None, None, sending=False).address
    found = balances(cfg, open_chain(cfg), address, tokens_of(cfg, token))
    if as_json:
        rows = [
            {"contract": b.contract, "address": b.address, "token": b.token, "amount": str(b.amount)} for b in found
        ]
        typer.echo(json.dumps({"node": address, "balances": rows}, indent=2))
        return
    typer.echo(f"unclaimed fees of {address}:")
    for b in found:
        typer.echo("  " + b.line())
    if not any(b.amount for b in found):
        note("nothing to claim yet")


@node_app.command("claim")
def node_claim(
    config: Path = CONFIG,
    key_env: str | None = KEY_ENV,
    token: list[str] | None = TOKEN_OPTION,
    to: str | None = typer.Option(None, help="where the fees go (default: the node's address)"),
    force: bool = FORCE,
) -> None:
    """Withdraw every unclaimed fee balance of the node's key (each token, each contract) to `--to`."""
    from node.commands import chain_ops

    if to is not None and not Web3.is_address(to):
        raise ConfigError(f"--to: {to!r} is not an address")
    if to is not None and int(to, 16) == 0:
        raise ConfigError("--to: the zero address would burn the fees; give the address that should receive them")
    cfg = load_config_file(config)
    extra = tokens_of(cfg, token)  # a bad --token is named before anything else happens
    c = open_chain(cfg)
    signer = load_signer(  # refused while a node holds the key and sends from it
        cfg, key_env, None, None, None, force=force, paused=lambda a: not c.registry.functions.isActive(a).call()
    )
    if key_env is None and node_running(cfg):  # a node whose key lock this environment does not see
        warn("a node is running with this key: its next transaction will find its nonce taken and resync")
    recipient = Web3.to_checksum_address(to or signer.address)
    due = [b for b in balances(cfg, c, signer.address, extra) if b.amount]
    if not due:
        note(f"nothing to claim: {signer.address} has no unclaimed fees in the tokens checked")
        return
    for b in due:
        contract = next(k for name, k in escrows(cfg, c) if name == b.contract)
        receipt = chain_ops.send_tx(
            c.w3,
            contract.functions.withdraw(b.token, recipient),
            signer,
            what=f"node claim ({b.contract})",
            reverts=c.reverts,
            max_fee_wei=cfg.chain.max_fee_per_gas_wei,
        )
        typer.echo(
            f"claimed {b.line().split(maxsplit=1)[1]} from the {b.contract} to {recipient}: "
            f"tx 0x{bytes(receipt['transactionHash']).hex()} in block {receipt['blockNumber']}"
        )
