"""`infera deploy` and `infera request`: put the contracts on a chain, and ask them for an inference."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from node.commands import (
    CONFIG,
    FORCE,
    KEY_ENV,
    KEYSTORE,
    PASSWORD_ENV,
    PASSWORD_FILE,
    load_config_file,
    load_signer,
    node_running,
    open_chain,
)
from node.commands.console import note, spinner, warn
from node.config import ETH_TOKEN
from node.errors import ConfigError


def deploy(
    rpc_url: str = typer.Option(..., "--rpc-url", help="HTTP JSON-RPC endpoint of the chain"),
    key_env: str | None = KEY_ENV,
    keystore: Path | None = KEYSTORE,
    password_env: str | None = PASSWORD_ENV,
    password_file: Path | None = PASSWORD_FILE,
    min_stake: str = typer.Option("1eth", help="smallest stake of an active node (e.g. 1eth, 5000gwei)"),
    unbonding_delay_s: int = typer.Option(7 * 86_400, help="seconds between unstake and withdraw"),
    owner: str | None = typer.Option(None, help="owner of the contracts (default: the deployer)"),
    example_model: str | None = typer.Option(None, help="also deploy the example SentimentConsumer for this model"),
    out: Path | None = typer.Option(None, "--out", help="also write the addresses (JSON) to this file"),
    artifacts_dir: Path | None = typer.Option(None, help="forge artifacts (default coordinator_contract/out)"),
) -> None:
    """Deploy the NodeRegistry and the Coordinator (from the forge build); print their addresses as JSON."""
    from node.commands import chain_ops

    deployer = load_signer(None, key_env, keystore, password_env, password_file, sending=False)
    w3 = chain_ops.connect([rpc_url])
    with spinner("deploying"):
        deployed = chain_ops.deploy_contracts(
            w3,
            deployer,
            min_stake_wei=chain_ops.parse_amount(min_stake),
            unbonding_delay_s=unbonding_delay_s,
            owner=owner,
            example_model=example_model,
            artifacts_dir=artifacts_dir,
        )
    assert deployed.subscription_manager is not None  # deploy_contracts always deploys it
    text = json.dumps(deployed.addresses(), indent=2)
    typer.echo(text)
    if out is not None:
        out.write_text(text + "\n")
        note(f"addresses written to {out}")
    note(
        f'in node.toml: [chain] coordinator_address = "{deployed.coordinator.address}", '
        f'subscription_manager_address = "{deployed.subscription_manager.address}", '
        f"start_block = {deployed.start_block}"
    )


def request(
    config: Path = CONFIG,
    model: str = typer.Option(..., "--model", "-m", help="model name, as in the node config"),
    input_text: str | None = typer.Option(None, "--input", "-i", help="text input (encoded as the model expects)"),
    input_hex: str | None = typer.Option(None, "--input-hex", help="input bytes as hex, sent as they are"),
    input_json: str | None = typer.Option(
        None, "--input-json", help='input fields as a JSON object, e.g. \'{"messages": ["Spam?"], "answer": 1}\''
    ),
    fee: str | None = typer.Option(
        None,
        help="fee for the node, e.g. 1gwei (default: the least this config's fee policy serves the model for in ETH,"
        " and at least the coordinator's minimum)",
    ),
    callback_gas: int = typer.Option(50_000, help="callback gas limit (the coordinator requires at least 1)"),
    timeout: float = typer.Option(120.0, "--timeout", help="seconds to wait for the on-chain answer"),
    raw: bool = typer.Option(
        False,
        "--raw",
        help="send --input TEXT as its UTF-8 bytes as they are, without asking the model's container how it encodes"
        " its input",
    ),
    key_env: str | None = KEY_ENV,
    as_json: bool = typer.Option(False, "--json", help="print the answer as JSON, with its request and tx"),
    force: bool = FORCE,
) -> None:
    """Send an inference request to the coordinator and print the on-chain answer.

    The fee is paid from the config's key, or from --key-env (needed while a node runs with that key)."""
    from node.commands import chain_ops
    from node.commands.request_inference import Codec, model_codec, send_request, unknown_model, wait_answer

    if sum(x is not None for x in (input_text, input_hex, input_json)) != 1:
        raise ConfigError("give exactly one of --input TEXT, --input-hex HEX or --input-json OBJECT")
    if raw and input_text is None:
        raise ConfigError(
            "--raw goes with --input TEXT (it sends the text as UTF-8 bytes); --input-hex is sent as it is"
        )
    cfg = load_config_file(config)
    served = next((m for m in cfg.models if m.name == model), None)
    codec: Codec | None = None
    why = ""
    typo = unknown_model(model, [m.name for m in cfg.models]) if served is None else None
    if typo is not None and input_hex is None and not raw:  # a misspelt name: not another node's model
        raise ConfigError(f"{typo} (a model only other nodes serve: pass --raw or --input-hex; nothing was sent)")
    if served is None:
        warn(f"this config does not serve model {model!r}: another node has to answer" + (f"; {typo}" if typo else ""))
        why = f"this config does not serve {model!r} (no container of it to ask for its input format)"
    else:
        try:
            codec = model_codec(cfg.stages(served))
        except chain_ops.OpsError as exc:
            why = str(exc)
    if codec is None:
        if input_text is not None and not raw:  # the node would fail bytes its container cannot decode
            raise chain_ops.OpsError(
                f"{why}, so the input cannot be encoded with its ABI and nothing was sent: start the container (or fix"
                " its [[models]] url), or pass --raw to send the text as UTF-8 bytes on purpose (--input-hex: bytes"
                " you encoded)"
            )
        codec = Codec()
    if input_hex is not None:
        try:
            input_ = bytes.fromhex(input_hex.removeprefix("0x"))
        except ValueError:
            raise ConfigError("--input-hex: not hex") from None
    elif input_json is not None:
        try:
            fields = json.loads(input_json)
        except ValueError as exc:
            raise ConfigError(f"--input-json is not JSON: {exc}") from None
        if not codec.input_types:
            raise chain_ops.OpsError(
                f"{why}, so --input-json cannot be encoded: start the container, or pass the encoded input with"
                " --input-hex"
                if why
                else f"the {model!r} container takes raw bytes, not fields: pass --input TEXT or --input-hex"
            )
        input_ = codec.encode_json(fields)
    else:
        assert input_text is not None
        input_ = input_text.encode() if raw else codec.encode_text(input_text)
    if key_env is None and not force and node_running(cfg):
        # The node counts its key's nonces itself: a transaction of ours from that key would take its next one.
        raise ConfigError(
            f"a node is running with this config (its API answers on port {cfg.api.port}), so its key is busy: "
            "pay from another account with --key-env NAME, or stop the node first"
        )
    signer = load_signer(cfg, key_env, None, None, None, force=force)  # refused while a node holds the key
    c = open_chain(cfg)
    fee_wei = chain_ops.parse_amount(fee) if fee is not None else int(c.coordinator.functions.minFee().call())
    policy = served.minimum_fee(ETH_TOKEN) if served is not None else None
    if fee is None and policy is not None:
        fee_wei = max(fee_wei, policy)
    elif served is not None and (policy is None or fee_wei < policy):
        why = "does not accept ETH" if policy is None else f"serves it from {chain_ops.eth(policy)}"
        warn(f"this config's fee policy for {model!r} {why}: a node with this config skips the request")
    request_id, block = send_request(
        c,
        signer,
        model=model,
        input_=input_,
        fee_wei=fee_wei,
        callback_gas=callback_gas,
        max_fee_wei=cfg.chain.max_fee_per_gas_wei,
    )
    note(f"request {request_id} sent in block {block} (fee {chain_ops.eth(fee_wei)}); waiting for the answer")
    with spinner(f"waiting for the answer to request {request_id}"):
        answer = wait_answer(c, request_id, from_block=block, timeout_s=timeout)
    if answer is None:
        raise chain_ops.OpsError(
            f"no answer to request {request_id} within {timeout:.0f} s: is a node serving {model!r} running and "
            "registered? (`infera jobs list`, `infera node status`); the request stays open until its deadline"
        )
    if answer.failure is not None:
        raise chain_ops.OpsError(
            f"node {answer.node} reported it cannot serve request {request_id}: {answer.failure} "
            f"(tx {answer.tx_hash}); other nodes may still answer before the deadline"
        )
    assert answer.output is not None
    decoded = codec.decode_output(answer.output)
    note(f"answered by {answer.node} in tx {answer.tx_hash} (block {answer.block_number})")
    if as_json:
        body = {
            "request_id": request_id,
            "model": model,
            "node": answer.node,
            "tx_hash": answer.tx_hash,
            "block_number": answer.block_number,
            "output_hex": "0x" + answer.output.hex(),
            "output": decoded,
        }
        typer.echo(json.dumps(body, indent=2))
    else:
        typer.echo(decoded if isinstance(decoded, str) else json.dumps(decoded))
