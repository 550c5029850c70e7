"""`infera`: the node's command line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from node import __version__
from node.errors import ConfigError, InferaError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Infera: on-chain AI inference oracle node.")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"infera: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def run(
    config: Path = typer.Option(..., "--config", "-c", help="node config file (TOML)"),
    log_json: bool = typer.Option(False, "--log-json", help="log JSON lines instead of text"),
) -> None:
    """Run the node: listen for requests, compute them in the containers, deliver the results on-chain."""
    from node.app import Node
    from node.config import load_config
    from node.log import setup_logging

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        _fail(f"config error: {exc}")
        return
    setup_logging(cfg.log.level, json_lines=log_json or cfg.log.json_lines)
    try:
        asyncio.run(Node(cfg).serve())
    except* ConfigError as group:
        _fail(f"config error: {group.exceptions[0]}")
    except* InferaError as group:
        _fail(str(group.exceptions[0]), code=1)


@app.command()
def devnet(
    once: bool = typer.Option(False, "--once", help="exit 0 after the first on-chain answer"),
    text: str = typer.Option("I absolutely love this, it is wonderful", help="sentence to classify"),
    workdir: Path = typer.Option(Path(".infera/devnet"), help="where logs and the node config go"),
) -> None:
    """Start anvil, deploy, start a classifier container and the node, and get one answer on-chain."""
    from node.devnet import DevnetError, run_devnet

    try:
        raise typer.Exit(run_devnet(once=once, text=text, workdir=workdir))
    except (DevnetError, TimeoutError) as exc:
        _fail(f"devnet failed: {exc}", code=1)
    except KeyboardInterrupt:
        typer.echo("devnet: stopped", err=True)
        raise typer.Exit(130) from None


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
