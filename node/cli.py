"""`infera`: the node's command line.

Guarantees: a failure prints `infera: <what went wrong and what to do>` on stderr and exits non-zero, without a
traceback (`INFERA_DEBUG=1` shows it); results go to stdout, progress to stderr.

Exit codes: 2 for a mistake in the config or the arguments, which a restart cannot fix (a bad key, an API port that
is taken, an `[api] host` that is not this machine's or does not resolve, a key listed twice in `[wallet]`, a store
path that cannot be a file): the systemd unit's `RestartPreventExitStatus=2` stops restarting then. 1 otherwise,
including a refusal because another node holds this node's store, keystore or key (`InstanceLocked`): that node may
stop, so a restart may succeed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from node import __version__
from node.commands import earnings as _earnings  # noqa: F401  (registers `infera node earnings` and `claim`)
from node.commands.chain import deploy, request
from node.commands.config import config_app
from node.commands.console import fail
from node.commands.decode import decode
from node.commands.jobs import jobs_app
from node.commands.keys import keys_app
from node.commands.receipts import receipt_app
from node.commands.stake import node_app
from node.config_hints import redact
from node.errors import ConfigError, InferaError

if TYPE_CHECKING:
    from node.config import NodeConfig
    from node.instance import InstanceLocks

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Infera: on-chain AI inference oracle node.",
)
app.command()(deploy)
app.command()(request)
app.command()(decode)
app.add_typer(node_app, name="node")
app.add_typer(jobs_app, name="jobs")
app.add_typer(keys_app, name="keys")
app.add_typer(config_app, name="config")
app.add_typer(receipt_app, name="receipt")


@app.command()
def run(
    config: Path = typer.Option(..., "--config", "-c", help="node config file (TOML)"),
    log_json: bool = typer.Option(False, "--log-json", help="log JSON lines instead of text"),
) -> None:
    """Run the node: listen for requests, compute them in the containers, deliver the results on-chain."""
    from node.app import Node
    from node.config import load_config
    from node.observability.logging import setup_logging

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        fail(f"config error: {exc}", code=2)
        return
    setup_logging(cfg.log.level, json_lines=log_json or cfg.log.json_lines)
    try:
        keystore_lock = _precheck_wallet(cfg)
    except ConfigError as exc:
        fail(f"config error: {exc}", code=2)
        return
    except InferaError as exc:
        fail(str(exc), code=1)
        return
    try:
        asyncio.run(Node(cfg).serve())
    except* ConfigError as group:
        fail(f"config error: {shown(group.exceptions[0])}", code=2)
    except* InferaError as group:
        fail(str(group.exceptions[0]), code=1)
    finally:
        keystore_lock.release()


def _precheck_wallet(cfg: NodeConfig) -> InstanceLocks:
    """What `infera run` checks of its keys before the node starts: a key listed twice in `[wallet]` (a
    `ConfigError` naming the variables; the addresses are read without unlocking anything), then the keystore file's
    lock, held for the node's life (`InstanceLocked` when another node holds it; see `node.instance`)."""
    from eth_account import Account

    from node.instance import InstanceLocks, listed_twice, take_keystore
    from node.keys import keystore_address

    wallet = cfg.wallet
    addresses, sources = [], []
    for source in wallet.key_sources():
        if source.startswith("keystore ") and wallet.keystore_path is not None:
            address = keystore_address(wallet.keystore_path.expanduser())
        else:
            try:
                address = Account.from_key(os.environ.get(source, "").strip()).address
            except Exception:  # unset or not a key: the node says so when it loads its keys
                address = None
        if address is not None:
            addresses.append(address)
            sources.append(source)
    twice = listed_twice(addresses, sources)
    if twice is not None:
        raise ConfigError(twice)
    locks = InstanceLocks()
    if wallet.keystore_path is not None and cfg.store.url is None:  # replicas share keys: the lease decides who acts
        take_keystore(locks, wallet.keystore_path)
    return locks


@app.command()
def devnet(
    once: bool = typer.Option(False, "--once", help="exit 0 once ready and the example answers are in"),
    text: str = typer.Option("I absolutely love this, it is wonderful", help="sentence the examples send"),
    workdir: Path = typer.Option(Path(".infera/devnet"), help="where logs, the node config and devnet.json go"),
    model: list[str] = typer.Option(
        [],
        "--model",
        help="model server to run: classify, llm, embed, generate, echo (repeat for several; default classify + llm)",
    ),
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="anvil's RPC port (default 8545 when free, else any free port)"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="where to write the addresses, ABIs, models and accounts (default <workdir>/devnet.json)"
    ),
    examples: bool = typer.Option(True, "--examples/--no-examples", help="send one example request per model"),
    nodes: int = typer.Option(
        1, "--nodes", min=1, max=8, help="staked nodes serving the models, each its own process and key (max 8)"
    ),
) -> None:
    """Start anvil, deploy, start model containers and the node; send example requests; print the dev accounts and
    write devnet.json for dApp scripts."""
    from node.devnet import DevnetError, run_devnet
    from node.devnet.models import DEFAULT_DEVNET_MODELS

    try:
        code = run_devnet(
            once=once,
            text=text,
            workdir=workdir,
            models=model or DEFAULT_DEVNET_MODELS,
            port=port,
            out=out,
            examples=examples,
            nodes=nodes,
        )
    except (DevnetError, TimeoutError) as exc:
        fail(f"devnet failed: {exc}", code=1)
    except KeyboardInterrupt:
        typer.echo("devnet: stopped", err=True)
        raise typer.Exit(130) from None
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def shown(exc: BaseException) -> str:
    """A config error's message as printed: redacted when it may quote the operator's input (`echoes_input`)."""
    return redact(str(exc)) if getattr(exc, "echoes_input", True) else str(exc)


def main() -> None:
    """The `infera` entry point: runs a command; turns every error into one `infera: …` line and an exit code."""
    try:
        app()
    except ConfigError as exc:  # a config error never shows a key pasted where it does not belong
        typer.echo(f"infera: {shown(exc)}", err=True)
        sys.exit(2)
    except InferaError as exc:
        typer.echo(f"infera: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("INFERA_DEBUG"):
            raise
        from node.chain.rpc import public_url

        message = str(exc)
        for word in message.split():  # an RPC URL in a library's message may carry an API key in its path
            if "://" in word:
                message = message.replace(word, public_url(word.strip("'\",()")))
        typer.echo(f"infera: unexpected {type(exc).__name__}: {message} (INFERA_DEBUG=1 shows where)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
