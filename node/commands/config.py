"""`infera config check`: validate a node config, its secrets and (optionally) the chain it names."""

from __future__ import annotations

from pathlib import Path

import typer

from node.commands import CONFIG
from node.commands.console import spinner, warn
from node.config_hints import redact

config_app = typer.Typer(no_args_is_help=True, help="Check a node config before running it.")


@config_app.command("check")
def config_check(
    config: Path = CONFIG,
    online: bool = typer.Option(False, "--online", help="also ask the RPC, the contracts and the containers"),
    chain_id: int | None = typer.Option(None, "--chain-id", help="the chain the RPC must serve (with --online)"),
) -> None:
    """Validate a config: every problem on its own line (exit 1), secrets reachable, optionally the chain."""
    from node.commands.config_check import Report, check_online, check_secrets, parse_file, summary

    cfg, problems = parse_file(config)
    if cfg is None:
        for line in problems:  # an environment variable's problem is not the file's
            own = line.startswith(("environment variable ", f"{config}: "))  # named already
            where = "" if own else f"{config}: "
            typer.echo(f"infera: {where}{line}", err=True)
        raise typer.Exit(1)
    report = Report()
    with spinner("checking secrets"):
        check_secrets(cfg, report)
    if online:
        with spinner("checking the chain"):
            check_online(cfg, report, chain_id=chain_id)
    for line in report.problems:  # a key pasted where a name goes is never shown
        typer.echo(f"infera: {config}: {redact(line)}", err=True)
    for line in report.warnings:
        warn(line)
    if report.problems:
        raise typer.Exit(1)
    typer.echo(f"config OK: {config}" + (" (online checks passed)" if online else ""))
    for line in summary(cfg) + report.facts:
        typer.echo(f"  {line}")
