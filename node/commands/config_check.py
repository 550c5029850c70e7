"""`infera config check`: everything `infera run` would trip over, found before it runs.

Guarantees: every problem is one line naming its key; secrets are only checked for being reachable (env var set,
keystore unlocks, password file readable), never shown; the online checks only read from the chain.
"""

from __future__ import annotations

import itertools
import json
import os
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from node.chain.rpc import public_url
from node.config import ETH_TOKEN, ModelConfig, NodeConfig, config_problems
from node.errors import ConfigError
from node.jobs.db import redact_url


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
    return config_problems(data)


def check_secrets(cfg: NodeConfig, report: Report) -> None:
    """Checks that every secret the config names can be had, and unlocks the node's keys."""
    from node.keys import account_from_env, load_account

    w = cfg.wallet
    source = f"keystore {w.keystore_path}" if w.keystore_path is not None else f"env variable {w.private_key_env}"
    sources: list[str] = []
    try:
        account = load_account(w)
        report.accounts.append(account)
        sources.append(w.key_sources()[0])
        report.facts.append(f"key       {account.address} ({source})")
    except ConfigError as exc:
        report.problems.append(str(exc))
    for i, env in enumerate(w.extra_key_envs):
        try:
            extra = account_from_env(env, key=f"wallet.extra_key_envs[{i}]")
            report.accounts.append(extra)
            sources.append(env)
            report.facts.append(f"key       {extra.address} (env variable {env})")
        except ConfigError as exc:
            report.problems.append(str(exc))
    from node.instance import listed_twice

    twice = listed_twice([a.address for a in report.accounts], sources)
    if twice is not None:  # `infera run` would refuse itself on its own key lock
        report.problems.append(twice)
    if cfg.mqtt is not None and cfg.mqtt.password_env and os.environ.get(cfg.mqtt.password_env) is None:
        report.problems.append(f"mqtt.password_env: env variable {cfg.mqtt.password_env} is not set")
    for i, token in enumerate(cfg.api.tokens):
        if token.token_env and not os.environ.get(token.token_env):
            report.problems.append(f"api.tokens[{i}].token_env: env variable {token.token_env} is not set")


def check_online(cfg: NodeConfig, report: Report, *, chain_id: int | None) -> None:
    """Asks every RPC URL for its chain, the coordinator for its code and registry, the registry whether each key
    is an active node, each verifier for its code and window, each accepted token for its code, each HTTP
    container for its health (and, for a model that attests, for its attester), and each pipeline's containers for
    ABI types that fit from stage to stage."""
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
    expected, source = chain_id, "--chain-id"
    if expected is None and chain.chain_id is not None:
        expected, source = chain.chain_id, "chain.chain_id"
    if expected is None and cfg.store.url is None and cfg.store.path.exists():
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
    check_contracts(cfg, w3, report)
    for i, model in enumerate(cfg.models):
        if model.url is not None and not _healthy(model.url):
            report.warnings.append(f"models[{i}].url: {model.url}/health does not answer 200 (container not up yet?)")
        elif model.url is not None and model.attests:
            check_attester(i, model.url, report)
    check_pipelines(cfg, report)


def check_pipelines(cfg: NodeConfig, report: Report) -> None:
    """Warns about each pipeline whose stage's output ABI (`GET /info` `output_abi`) is not the next stage's input
    ABI: the next stage would refuse every output (a 4xx, reported on-chain). Stages over MQTT, containers that do not
    answer `/info` (Infernet's) and raw-bytes stages cannot be judged and are passed."""
    infos: dict[str, dict[str, Any] | None] = {}
    for i, model in enumerate(cfg.models):
        if model.pipeline is None:
            continue
        stages = cfg.stages(model)
        for j, (first, then) in enumerate(itertools.pairwise(stages)):
            out, in_ = _info(infos, first).get("output_abi"), _info(infos, then).get("input_abi")
            if not (isinstance(out, str) and isinstance(in_, str) and out.startswith("(") and in_.startswith("(")):
                continue  # unknown, or raw bytes: cannot be judged
            if out.replace(" ", "") != in_.replace(" ", ""):
                report.warnings.append(
                    f"models[{i}].pipeline[{j + 1}]: {first.name} answers {out} but {then.name} takes {in_}:"
                    " every request would fail at that stage"
                )


def _info(cache: dict[str, dict[str, Any] | None], model: ModelConfig) -> dict[str, Any]:
    """The container's `GET /info` (an empty dict when it has no URL or does not answer a JSON object)."""
    if model.name not in cache:
        cache[model.name] = None
        if model.url is not None:
            try:
                with urllib.request.urlopen(model.url.rstrip("/") + "/info", timeout=5) as resp:
                    info = json.loads(resp.read())
                cache[model.name] = info if isinstance(info, dict) else None
            except (urllib.error.URLError, OSError, ValueError):
                pass
    return cache[model.name] or {}


#: `window()` of a verifier (`IVerifier`): 0 for one that judges at delivery, the dispute window (s) otherwise.
_WINDOW_ABI = [
    {
        "type": "function",
        "name": "window",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint64"}],
    }
]


def check_contracts(cfg: NodeConfig, w3: Any, report: Report) -> None:
    """Checks that each `[chain] verifiers` address holds code and answers `window()` as its kind says (0 for
    attestation, above 0 for optimistic), and that each accepted ERC-20 token address holds code."""
    for address, kind in cfg.chain.verifiers.items():
        key = f"chain.verifiers.{address}"
        if not bytes(w3.eth.get_code(address)):
            report.problems.append(f"{key}: no contract at this address on this chain; give the verifier's address")
            continue
        try:
            window = int(w3.eth.contract(address=address, abi=_WINDOW_ABI).functions.window().call())
        except Exception as exc:  # any revert or decoding failure means: not a verifier
            report.problems.append(
                f"{key}: the contract does not answer window() ({type(exc).__name__}): not a verifier; check the"
                " address"
            )
            continue
        if kind == "attestation" and window != 0:
            report.problems.append(
                f'{key}: listed as "attestation" but its window() is {window} s (an optimistic verifier);'
                ' set its kind to "optimistic" or give the attestation verifier\'s address'
            )
        elif kind == "optimistic" and window == 0:
            report.problems.append(
                f'{key}: listed as "optimistic" but its window() is 0 (it judges at delivery: an attestation'
                ' verifier); set its kind to "attestation" or give the optimistic verifier\'s address'
            )
    for i, model in enumerate(cfg.models):
        for token in model.accepted_payments:
            if token == ETH_TOKEN:
                continue
            if not bytes(w3.eth.get_code(token)):
                report.problems.append(
                    f"models[{i}].accepted_payments.{token}: no contract at this address on this chain (not an ERC-20"
                    " token here); give the token's address on this chain"
                )


def check_attester(index: int, url: str, report: Report) -> None:
    """Checks that the container of a model with `attests = true` reports an attester in `GET /info`."""
    key = f"models[{index}].attests"
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/info", timeout=5) as resp:
            info = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        report.problems.append(f"{key}: {url}/info does not answer JSON ({exc}); cannot tell whether it attests")
        return
    if not isinstance(info, dict) or not info.get("attester"):
        report.problems.append(
            f"{key}: the container at {url} reports no attester in /info: start it with --attestation-key-file"
            " (and register the key's address with the verifier), or set attests = false"
        )
    else:
        report.facts.append(f"attester  {info['attester']} (container of models[{index}])")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _where(m: ModelConfig) -> str:
    """Where a model is served from, for the summary: its URL, `mqtt`, or its pipeline's stages."""
    where = " -> ".join(m.pipeline) if m.pipeline is not None else (m.url or "mqtt")
    return where if m.served else f"{where}; a pipeline stage only"


def summary(cfg: NodeConfig) -> list[str]:
    """The config's main choices, one line each (no secrets)."""
    models = ", ".join(f"{m.name} ({_where(m)})" for m in cfg.models)
    fallbacks = len(cfg.chain.fallback_rpc_urls)
    return [
        f"rpc       {public_url(cfg.chain.rpc_url)}" + (f" (+{fallbacks} fallback)" if fallbacks else ""),
        f"contract  coordinator {cfg.chain.coordinator_address}, from block {cfg.chain.start_block}",
        f"models    {models}",
        f"store     {redact_url(cfg.store.location)}"
        + (f" (replicas: lease {cfg.store.lease_ttl_s:g} s)" if cfg.store.url else ""),
        f"api       {'off' if cfg.api.port == 0 else f'{cfg.api.host}:{cfg.api.port}'}",
    ]
