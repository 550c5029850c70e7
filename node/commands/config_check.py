"""`infera config check`: everything `infera run` would trip over, found before it runs.

Guarantees: every problem is one line naming its key; secrets are only checked for being reachable (env var set,
keystore unlocks, password file readable), never shown; the online checks only read from the chain.
"""

from __future__ import annotations

import os
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount
from pydantic import ValidationError

from node.chain.rpc import public_url
from node.config import NodeConfig, format_errors
from node.errors import ConfigError


@dataclass
class Report:
    """What the check found: `problems` fail it, `warnings` do not; `facts` summarise a good config."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    accounts: list[LocalAccount] = field(default_factory=list)


def parse_file(path: Path) -> tuple[NodeConfig | None, list[str]]:
    """The config at `path` (with `INFERA_*` env overrides), or every problem as `key: reason`."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None, [f"{path}: file not found"]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{path}: cannot read: {exc}"]
    except tomllib.TOMLDecodeError as exc:
        return None, [f"{path}: not valid TOML: {exc}"]
    try:
        return NodeConfig(**data), []
    except ValidationError as exc:
        return None, format_errors(exc)


def check_secrets(cfg: NodeConfig, report: Report) -> None:
    """Checks that every secret the config names can be had, and unlocks the node's keys."""
    from node.keys import account_from_env, load_account

    w = cfg.wallet
    source = f"keystore {w.keystore_path}" if w.keystore_path is not None else f"env variable {w.private_key_env}"
    try:
        account = load_account(w)
        report.accounts.append(account)
        report.facts.append(f"key       {account.address} ({source})")
    except ConfigError as exc:
        report.problems.append(str(exc))
    for i, env in enumerate(w.extra_key_envs):
        try:
            extra = account_from_env(env, key=f"wallet.extra_key_envs[{i}]")
            report.accounts.append(extra)
            report.facts.append(f"key       {extra.address} (env variable {env})")
        except ConfigError as exc:
            report.problems.append(str(exc))
    if cfg.mqtt is not None and cfg.mqtt.password_env and os.environ.get(cfg.mqtt.password_env) is None:
        report.problems.append(f"mqtt.password_env: env variable {cfg.mqtt.password_env} is not set")
    for i, token in enumerate(cfg.api.tokens):
        if token.token_env and not os.environ.get(token.token_env):
            report.problems.append(f"api.tokens[{i}].token_env: env variable {token.token_env} is not set")


def check_online(cfg: NodeConfig, report: Report, *, chain_id: int | None) -> None:
    """Asks every RPC URL for its chain, the coordinator for its code and registry, the registry whether each key
    is an active node, and each HTTP container for its health."""
    from node.commands import chain_ops
    from node.jobs.store import JobStore

    chain = cfg.chain
    ids: dict[str, int] = {}
    for i, url in enumerate([chain.rpc_url, *chain.fallback_rpc_urls]):
        key = "chain.rpc_url" if i == 0 else f"chain.fallback_rpc_urls[{i - 1}]"
        try:
            ids[url] = int(chain_ops.connect([url], timeout_s=10).eth.chain_id)
        except chain_ops.OpsError as exc:
            report.problems.append(f"{key}: {exc}")
    if not ids:
        return
    expected = chain_id
    source = "--chain-id"
    if expected is None and cfg.store.path.exists():
        stored = {c for c, a in JobStore.scopes(cfg.store.path) if a == chain.coordinator_address.lower()}
        if len(stored) == 1:
            expected, source = stored.pop(), f"the job store {cfg.store.path}"
    for url, got in ids.items():
        if expected is not None and got != expected:
            report.problems.append(
                f"chain.rpc_url: {public_url(url)} serves chain {got}, but {source} says chain {expected}"
            )
    if len(set(ids.values())) > 1:
        shown = {public_url(u): c for u, c in ids.items()}
        report.problems.append(f"chain.fallback_rpc_urls: the RPC URLs serve different chains: {shown}")
    url = next(iter(ids))
    w3 = chain_ops.connect([url])
    try:
        contracts = chain_ops.open_contracts(w3, chain.coordinator_address, chain.artifacts_dir)
    except chain_ops.OpsError as exc:
        report.problems.append(str(exc))
        return
    report.facts.append(
        f"chain     {ids[url]} at block {w3.eth.block_number}; coordinator {contracts.coordinator.address}, "
        f"registry {contracts.registry.address}"
    )
    for account in report.accounts:
        status = chain_ops.node_status(contracts, account.address)
        if not status.active:
            report.warnings.append(
                f"{account.address} is not an active node (stake {chain_ops.eth(status.stake_wei)}): its deliveries "
                "would revert; run `infera node register` (or `infera node status`)"
            )
    for i, model in enumerate(cfg.models):
        if model.url is not None and not _healthy(model.url):
            report.warnings.append(f"models[{i}].url: {model.url}/health does not answer 200 (container not up yet?)")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def summary(cfg: NodeConfig) -> list[str]:
    """The config's main choices, one line each (no secrets)."""
    models = ", ".join(f"{m.name} ({m.url or 'mqtt'})" for m in cfg.models)
    fallbacks = len(cfg.chain.fallback_rpc_urls)
    return [
        f"rpc       {public_url(cfg.chain.rpc_url)}" + (f" (+{fallbacks} fallback)" if fallbacks else ""),
        f"contract  coordinator {cfg.chain.coordinator_address}, from block {cfg.chain.start_block}",
        f"models    {models}",
        f"store     {cfg.store.path}",
        f"api       {'off' if cfg.api.port == 0 else f'{cfg.api.host}:{cfg.api.port}'}",
    ]
