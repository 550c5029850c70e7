"""`infera node`: the node's registration and stake in the NodeRegistry.

Each action reads the key and RPC from the node config, simulates and sends its transaction, waits for the receipt
and prints what changed; a revert is named with what to do about it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from node.commands import CONFIG, FORCE, KEY_ENV, load_config_file, load_signer, node_running, open_chain
from node.commands.console import note, warn
from node.errors import ConfigError

if TYPE_CHECKING:
    from node.commands.chain_ops import Contracts, NodeStatus

node_app = typer.Typer(no_args_is_help=True, help="The node's registration and stake in the NodeRegistry.")


def _node_action(
    config: Path,
    key_env: str | None,
    what: str,
    fn_name: str,
    *,
    args: Callable[[str], tuple[Any, ...]] = lambda address: (),
    value: Callable[[Contracts], int] = lambda c: 0,
    force: bool = False,
) -> tuple[str, NodeStatus, NodeStatus]:
    """Sends registry function `fn_name(*args(node address))` from the node's key paying `value(contracts)`;
    returns the node's address and its status before and after. Raises `KeyInUse` while a running node holds the
    key and the registry takes it as active (that node sends from it), unless `force`."""
    from node.commands import chain_ops

    cfg = load_config_file(config)
    c = open_chain(cfg)
    signer = load_signer(cfg, key_env, None, None, None, force=force, paused=lambda a: not _active(c, a))
    if key_env is None and node_running(cfg):  # a node whose key lock this environment does not see
        warn("a node is running with this key: its next transaction will find its nonce taken and resync")
    before = chain_ops.node_status(c, signer.address)
    fn = getattr(c.registry.functions, fn_name)(*args(signer.address))
    receipt = chain_ops.send_tx(
        c.w3, fn, signer, what=what, reverts=c.reverts, value=value(c), max_fee_wei=cfg.chain.max_fee_per_gas_wei
    )
    after = chain_ops.node_status(c, signer.address)
    note(f"{what}: tx 0x{bytes(receipt['transactionHash']).hex()} in block {receipt['blockNumber']}")
    return signer.address, before, after


@node_app.command("register")
def node_register(
    config: Path = CONFIG,
    amount: str | None = typer.Option(None, help="stake to lock (default: the registry's minimum), e.g. 2eth"),
    key_env: str | None = KEY_ENV,
    force: bool = FORCE,
) -> None:
    """Register the node's key in the NodeRegistry, locking its stake; it is active at once."""
    from node.commands import chain_ops

    def stake(c: Contracts) -> int:
        return chain_ops.parse_amount(amount) if amount is not None else int(c.registry.functions.minStake().call())

    address, _, after = _node_action(config, key_env, "node register", "register", value=stake, force=force)
    typer.echo(f"registered {address} with a stake of {chain_ops.eth(after.stake_wei)}; active: {_yes(after.active)}")


@node_app.command("stake")
def node_stake(
    config: Path = CONFIG,
    amount: str = typer.Option(..., help="stake to add, e.g. 0.5eth"),
    key_env: str | None = KEY_ENV,
    force: bool = FORCE,
) -> None:
    """Add stake to the node's registration."""
    from node.commands import chain_ops

    wei = chain_ops.parse_amount(amount)
    address, before, after = _node_action(config, key_env, "node stake", "addStake", value=lambda c: wei, force=force)
    typer.echo(f"stake of {address}: {chain_ops.eth(before.stake_wei)} -> {chain_ops.eth(after.stake_wei)}")


@node_app.command("unstake")
def node_unstake(config: Path = CONFIG, key_env: str | None = KEY_ENV, force: bool = FORCE) -> None:
    """Begin unbonding: the node is inactive at once; its stake can be withdrawn after the unbonding delay."""
    from node.commands import chain_ops

    address, _, after = _node_action(config, key_env, "node unstake", "beginUnbonding", force=force)
    typer.echo(
        f"{address} is unbonding: inactive now; {chain_ops.eth(after.stake_wei)} unlocks at "
        f"{chain_ops.utc(after.unlock_at)}, then run `infera node withdraw`"
    )


@node_app.command("withdraw")
def node_withdraw(
    config: Path = CONFIG,
    to: str | None = typer.Option(None, help="where the stake goes (default: the node's address)"),
    key_env: str | None = KEY_ENV,
    force: bool = FORCE,
) -> None:
    """Withdraw the stake after the unbonding delay; the key is then no longer registered."""
    from web3 import Web3

    from node.commands import chain_ops

    if to is not None and not Web3.is_address(to):
        raise ConfigError(f"--to: {to!r} is not an address")

    def recipient(address: str) -> tuple[Any, ...]:
        return (Web3.to_checksum_address(to or address),)

    address, before, _ = _node_action(config, key_env, "node withdraw", "withdrawStake", args=recipient, force=force)
    typer.echo(
        f"withdrew {chain_ops.eth(before.stake_wei)} of {address} to {recipient(address)[0]}; "
        f"{address} is no longer registered"
    )


@node_app.command("status")
def node_status(
    config: Path = CONFIG,
    key_env: str | None = KEY_ENV,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """The node's stake, whether it is active, and when unbonding stake unlocks (no password needed for a keystore
    that declares its address)."""
    from node.commands import chain_ops
    from node.keys import keystore_address

    cfg = load_config_file(config)
    keystore = cfg.wallet.keystore_path if key_env is None else None
    # Reading needs only the address, which a keystore states in clear: no need to unlock it.
    address = keystore_address(keystore.expanduser()) if keystore is not None else None
    if address is None:
        address = load_signer(cfg, key_env, None, None, None, sending=False).address
    status = chain_ops.node_status(open_chain(cfg), address)
    if as_json:
        typer.echo(json.dumps(status.as_dict(), indent=2))
    else:
        typer.echo("\n".join(status.lines()))


def _active(c: Contracts, address: str) -> bool:
    """Whether the registry takes `address` as an active node now (a running node sends only from active keys)."""
    return bool(c.registry.functions.isActive(address).call())


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@node_app.command("commit-model")
def node_commit_model(
    model: str = typer.Option(..., "--model", help="the model's name as in the config's [[models]]"),
    digest: str | None = typer.Option(
        None, help="the weights digest to commit (0x + 64 hex); default: what the model's container reports at /info"
    ),
    config: Path = CONFIG,
    key_env: str | None = KEY_ENV,
    force: bool = FORCE,
) -> None:
    """Commit a model's weights digest in the NodeRegistry (provenance): consensus requests that require a digest are
    served only by nodes committed to it, and the node refuses to start a model whose container reports another.
    Run it after changing a model's weights on purpose; the node commits a first digest by itself at start."""
    import urllib.request

    from node.chain.contracts import model_id

    cfg = load_config_file(config)
    entry = next((m for m in cfg.models if m.name == model), None)
    if entry is None:
        raise ConfigError(f"--model {model}: not in the config's [[models]] ({', '.join(m.name for m in cfg.models)})")
    if digest is None:
        if entry.url is None:
            raise ConfigError(f"--model {model}: it has no container URL to ask; pass --digest 0x…")
        url = str(entry.url).rstrip("/") + "/info"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                info = json.loads(resp.read())
            reported = info.get("model_digest") if isinstance(info, dict) else None
        except (OSError, ValueError, RecursionError) as exc:
            raise ConfigError(f"--model {model}: {url} does not answer JSON ({exc}); start its container") from None
        if not reported:
            raise ConfigError(f"--model {model}: {url} reports no model_digest (a model without weight files?)")
        digest = str(reported)
    try:
        raw = bytes.fromhex(digest.removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"--digest {digest}: a weights digest is 0x followed by 64 hex digits")
    address, _, _ = _node_action(
        config, key_env, f"node commit-model {model}", "commitModel", args=lambda _: (model_id(model), raw), force=force
    )
    typer.echo(f"{address} committed weights digest 0x{raw.hex()} for {model}")
