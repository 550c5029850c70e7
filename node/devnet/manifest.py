"""`devnet.json`: what a dApp script or frontend needs to use a running devnet, in one file.

Format (version `MANIFEST_VERSION`; a field is only ever added within a version):

- `version` (int), `chain_id` (int), `rpc_url`, `ws_url` (str), `start_block` (int: the block before the deploy),
  `fee_wei` (int: the fee the examples pay a request; the coordinator's floor is `minFee()`).
- `contracts`: key → `{"contract": name, "address": checksummed, "abi": [...]}` plus `"model"` (its model name) for
  an example consumer; the Coordinator's ABI includes the consensus entries it serves (`requestConsensusInference`,
  `commit`, `reveal`, `consensusOf`, their events and errors). The keys are those of `<workdir>/deployment.json`
  (`node_registry`, `coordinator`, `subscription_manager`, `attestation_verifier`, `reexecution_verifier`,
  `example_consumer`: the SentimentConsumer), plus the example consumers of the served models (`llm_moderation`,
  `llm_score`, `prompt_consumer`).
- `models`: one entry per served model: `key` (the `--model` key), `name`, `model_id` (0x + keccak256 of the name, 32
  bytes hex), `url` (its container), `examples` (keys into `contracts`), and from the container's `/info`:
  `input_abi`, `output_abi` (ABI tuples such as `"(string)"`: abi.encode the input, abi.decode the output; echo's
  are `"raw bytes"`), `input_names`, `output_names`.
- `node`: `address` (the node's account: send nothing from it), `api_url` (its `/readyz`, `/v1`, status page),
  `config`, `log` (paths). `nodes`: every node the devnet runs (`--nodes N`), the same fields, `node` first; the
  second and later nodes use anvil accounts 10, 11, … (not in `accounts`).
- `accounts`: anvil's ten development accounts, `{"index", "address", "private_key", "role"}` with role `deployer`
  (owns the contracts), `node` (the node's: do not use) or `dapp` (free for scripts); `mnemonic`, `warning`.

Guarantees: the file is written whole or not at all (a temporary file renamed), so a reader that sees it reads all
of it. The keys in it are anvil's public test keys: never use them for real funds.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from web3.contract import Contract

from node.chain.contracts import model_id
from node.devnet.deployment import ANVIL_MNEMONIC, DEFAULT_FEE_WEI, Deployment, dev_account

MANIFEST_VERSION = 1
#: Anvil's default accounts: 0 deploys and owns the contracts, 1 is the node's, the rest are the dApp's.
ACCOUNT_COUNT = 10
DEPLOYER_INDEX = 0
NODE_INDEX = 1
KEYS_WARNING = (
    "These are anvil's PUBLIC test keys (from a mnemonic everyone knows): for this devnet only, never for real funds"
)


def account_role(index: int) -> str:
    """`deployer` for account 0, `node` for account 1, `dapp` for the others."""
    return {DEPLOYER_INDEX: "deployer", NODE_INDEX: "node"}.get(index, "dapp")


def dev_accounts() -> list[dict[str, Any]]:
    """Anvil's ten development accounts: `{"index", "address", "private_key" (0x hex), "role"}`."""
    accounts = []
    for index in range(ACCOUNT_COUNT):
        account = dev_account(index)
        accounts.append(
            {
                "index": index,
                "address": account.address,
                "private_key": "0x" + bytes(account.key).hex(),
                "role": account_role(index),
            }
        )
    return accounts


@dataclass
class Served:
    """A model the devnet serves: its `--model` key, name, container URL and the keys of its example consumers."""

    key: str
    name: str
    url: str
    examples: list[str] = field(default_factory=list)
    #: From the container's /info: `input_abi`, `output_abi` (e.g. "(string)"), `input_names`, `output_names`.
    wire: dict[str, Any] = field(default_factory=dict)


WIRE_KEYS = ("input_abi", "output_abi", "input_names", "output_names")


def container_wire(url: str) -> dict[str, Any]:
    """`WIRE_KEYS` from the container's `GET /info` at `url` (base URL); empty when it does not answer; never
    raises."""
    try:
        with urllib.request.urlopen(f"{url}/info", timeout=5) as resp:
            info = json.loads(resp.read())
    except (OSError, ValueError):
        return {}
    return {k: info[k] for k in WIRE_KEYS if isinstance(info, dict) and k in info}


def contract_entry(
    name: str, contract: Contract, model: str | None = None, abi: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """`{"contract": name, "address", "abi"}` (`abi` default: the contract's own), plus `"model"` when given."""
    entry: dict[str, Any] = {"contract": name, "address": contract.address, "abi": list(abi or contract.abi)}
    if model is not None:
        entry["model"] = model
    return entry


def manifest(
    *,
    chain_id: int,
    rpc_url: str,
    ws_url: str,
    deployment: Deployment,
    coordinator_abi: list[dict[str, Any]],
    example_model: str,
    examples: dict[str, tuple[str, Contract, str]],
    served: list[Served],
    nodes: list[dict[str, Any]],
) -> dict[str, Any]:
    """The devnet.json document (see the module for its fields). `examples`: key → (contract name, contract, model
    name) of the example consumers deployed for the served models; `example_model`: the SentimentConsumer's model;
    `nodes`: each node's `{"address", "api_url", "config", "log"}`, the first the node account's;
    `coordinator_abi`: the Coordinator's ABI as the node reads it (`CoordinatorAbi.from_artifacts().abi`: with the
    consensus functions, events and errors it serves through its `ConsensusModule`)."""
    contracts: dict[str, Any] = {
        "node_registry": contract_entry("NodeRegistry", deployment.registry),
        "coordinator": contract_entry("Coordinator", deployment.coordinator, abi=coordinator_abi),
    }
    for key, name, contract in (
        ("subscription_manager", "SubscriptionManager", deployment.subscriptions),
        ("attestation_verifier", "AttestationVerifier", deployment.attestation_verifier),
        ("reexecution_verifier", "ReexecutionVerifier", deployment.reexecution_verifier),
    ):
        if contract is not None:
            contracts[key] = contract_entry(name, contract)
    contracts["example_consumer"] = contract_entry("SentimentConsumer", deployment.consumer, example_model)
    for key, (name, contract, model) in examples.items():
        contracts[key] = contract_entry(name, contract, model)
    return {
        "version": MANIFEST_VERSION,
        "chain_id": chain_id,
        "rpc_url": rpc_url,
        "ws_url": ws_url,
        "start_block": deployment.start_block,
        "fee_wei": DEFAULT_FEE_WEI,
        "contracts": contracts,
        "models": [
            {
                "key": s.key,
                "name": s.name,
                "model_id": "0x" + model_id(s.name).hex(),
                "url": s.url,
                "examples": s.examples,
                **s.wire,
            }
            for s in served
        ],
        "node": nodes[0],
        "nodes": nodes,
        "accounts": dev_accounts(),
        "mnemonic": ANVIL_MNEMONIC,
        "warning": KEYS_WARNING,
    }


def write_manifest(path: Path, document: dict[str, Any]) -> None:
    """Writes `document` as indented JSON to `path` whole: to a temporary file beside it, then renamed. Raises
    `OSError` when the folder cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)
