"""`infera receipt check`: fetch a node's signed run receipt (`GET /receipts/<id>`) and check it against the chain.

Anyone can run it (it needs no key): the signature must be the node's, and the hashes it signs must be the chain's —
the input hash that of `RequestCreated`'s input, the output hash (and, for a consensus request, the model digest)
that of the node's `Revealed` or `RequestFulfilled` event. Exits 1 when any check fails.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import typer

from node.commands import CONFIG, load_config_file
from node.commands.console import fail, note
from node.errors import ConfigError

receipt_app = typer.Typer(no_args_is_help=True, help="Run receipts: a node's signed record of a request it served.")


def fetch(url: str, request_id: int) -> dict[str, Any]:
    """`GET <url>/receipts/<request_id>` as JSON; raises `ConfigError` naming what went wrong."""
    where = f"{url.rstrip('/')}/receipts/{request_id}"
    try:
        with urllib.request.urlopen(where, timeout=10) as resp:
            answer: Any = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise ConfigError(f"{where}: {exc.code} {exc.read().decode(errors='replace')[:200]}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConfigError(f"{where}: no receipt ({exc}); is the node's API reachable there?") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("receipt"), dict) or "signature" not in answer:
        raise ConfigError(f"{where}: the answer is not a signed receipt")
    return answer


def checks(
    answer: dict[str, Any], logs: dict[str, list[Any]], chain_id: int, coordinator: str, request_id: int
) -> list[str]:
    """What is wrong with `answer` (a signed receipt said to be of `request_id`) against the chain (`logs`: the
    request's `RequestCreated`, and the receipt's node's `Revealed`, `RequestFulfilled` and `Dissented` events, as
    web3 decodes them); empty when all holds."""
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from eth_utils.crypto import keccak

    from node.api.receipts import canonical

    receipt, problems = answer["receipt"], []
    try:
        signer = Account.recover_message(encode_defunct(text=canonical(receipt)), signature=answer["signature"])
    except Exception as exc:  # any malformed signature is a failed check, not a crash
        signer = f"nobody ({exc})"
    if str(signer).lower() != str(receipt.get("node", "")).lower():
        problems.append(f"signature: signed by {signer}, not by the node it names ({receipt.get('node')})")
    if receipt.get("chain_id") != chain_id or str(receipt.get("coordinator", "")).lower() != coordinator.lower():
        problems.append(f"chain: the receipt is for chain {receipt.get('chain_id')}, {receipt.get('coordinator')}")
    if str(receipt.get("request_id")) != str(request_id):
        problems.append(f"request: the receipt is of request {receipt.get('request_id')}, not {request_id}")
    created = logs["RequestCreated"]
    if not created:
        problems.append("input: no RequestCreated for this request on-chain")
    else:
        if "0x" + keccak(bytes(created[0]["args"]["input"])).hex() != receipt.get("input_hash"):
            problems.append("input: input_hash is not the hash of the request's input on-chain")
        if "0x" + bytes(created[0]["args"]["modelId"]).hex() != str(receipt.get("model_id", "")).lower():
            problems.append("model: model_id is not the request's modelId on-chain")
        elif "0x" + keccak(text=str(receipt.get("model"))).hex() != str(receipt.get("model_id", "")).lower():
            problems.append("model: the model name does not hash to the model_id")
    verification = str(receipt.get("verification") or "")
    if verification.startswith("agreed") and not logs["RequestFulfilled"]:
        problems.append("outcome: it says agreed, but the node was not paid for this request (no RequestFulfilled)")
    if verification.startswith("dissented") and not logs["Dissented"]:
        problems.append("outcome: it says dissented, but no Dissented event names the node")
    if logs["Dissented"] and not verification.startswith("dissented"):
        problems.append(f"outcome: it says {verification or 'nothing'}, but a Dissented event names the node")
    delivered = logs["Revealed"] or logs["RequestFulfilled"]
    if receipt.get("output_hash") is None:
        problems.append("output: the receipt names no output yet (a consensus output is hidden until revealed)")
    elif not delivered:
        problems.append("output: this node has no Revealed or RequestFulfilled event for the request (yet)")
    else:
        args = delivered[0]["args"]
        if "0x" + bytes(args["outputHash"]).hex() != receipt.get("output_hash"):
            problems.append("output: output_hash is not the outputHash of the node's event on-chain")
        claimed = receipt.get("model_digest")  # none: a model the node could not ask (MQTT, a pipeline)
        if logs["Revealed"] and claimed is not None and "0x" + bytes(args["modelDigest"]).hex() != claimed:
            problems.append("model: model_digest is not the digest the node's Revealed event names")
    return problems


@receipt_app.command("check")
def check(
    request_id: int = typer.Option(..., "--request", help="the request id"),
    url: str = typer.Option(..., "--url", help="the node's API base URL, e.g. http://127.0.0.1:8080"),
    config: Path = CONFIG,
) -> None:
    """Fetch a node's receipt of a request and check its signature and hashes against the chain (the config gives
    the RPC and the coordinator; no key is read)."""
    from web3 import Web3

    from node.chain.contracts import CoordinatorAbi
    from node.commands import chain_ops

    cfg = load_config_file(config)
    answer = fetch(url, request_id)
    node = str(answer["receipt"].get("node", ""))
    w3 = chain_ops.connect([cfg.chain.rpc_url, *cfg.chain.fallback_rpc_urls])
    coordinator = w3.eth.contract(
        address=Web3.to_checksum_address(cfg.chain.coordinator_address),
        abi=CoordinatorAbi.from_artifacts(cfg.chain.artifacts_dir).abi,
    )
    since = cfg.chain.start_block or 0
    logs: dict[str, list[Any]] = {}
    for name in ("RequestCreated", "Revealed", "RequestFulfilled", "Dissented"):
        wanted: dict[str, Any] = {"requestId": request_id}
        if name != "RequestCreated":
            if not Web3.is_address(node):
                raise ConfigError(f"the receipt names no node address ({node!r})")
            wanted["node"] = Web3.to_checksum_address(node)
        event = getattr(coordinator.events, name)()
        logs[name] = list(event.get_logs(from_block=since, argument_filters=wanted))
    problems = checks(answer, logs, int(w3.eth.chain_id), coordinator.address, request_id)
    receipt = answer["receipt"]
    note(
        f"request {request_id}: node {node}, model {receipt.get('model')} (digest {receipt.get('model_digest')}),"
        f" state {receipt.get('state')}, {receipt.get('verification') or 'plain'}"
    )
    if problems:
        for problem in problems:
            typer.echo(f"FAIL {problem}")
        fail(f"the receipt of request {request_id} does not check out")
    digest = "model digest" if logs["Revealed"] else "model id (a plain delivery's event names no digest)"
    typer.echo(f"OK   signed by {node}; input, output, outcome and {digest} match the chain")
