"""A dApp script as a developer would write it against a running `infera devnet`: it knows nothing of Infera's
Python code and reads everything (RPC, addresses, ABIs, model ids, accounts) from devnet.json.

    python tests/e2e/dapp_script.py .infera/devnet/devnet.json

It asks the SentimentConsumer for a sentiment (when the classifier is served) and the Coordinator directly for an
echo (when echo is served), from the last dApp account, waits for both answers on-chain (60 s at most) and prints
them as one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from eth_account import Account
from web3 import HTTPProvider, Web3


def send(w3: Web3, account: Any, fn: Any, value: int) -> Any:
    """Signs and sends `fn` from `account` with `value` wei; returns the receipt (raises when it reverted)."""
    tx = fn.build_transaction(
        {"from": account.address, "value": value, "nonce": w3.eth.get_transaction_count(account.address)}
    )
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction), timeout=30
    )
    if receipt["status"] != 1:
        raise RuntimeError(f"transaction {receipt['transactionHash'].hex()} reverted")
    return receipt


def wait(check: Any, what: str, timeout_s: float = 60) -> Any:
    """Polls `check` until it returns something truthy; raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"no {what} within {timeout_s:.0f} s")


def main(path: str) -> dict[str, Any]:
    """Sends the requests and returns what came back on-chain."""
    with open(path) as f:
        devnet = json.load(f)
    assert devnet["version"] == 1, devnet["version"]
    w3 = Web3(HTTPProvider(devnet["rpc_url"]))
    assert w3.eth.chain_id == devnet["chain_id"]
    contracts = {key: w3.eth.contract(address=c["address"], abi=c["abi"]) for key, c in devnet["contracts"].items()}
    dapp = [a for a in devnet["accounts"] if a["role"] == "dapp"][-1]
    account = Account.from_key(dapp["private_key"])
    fee = devnet["fee_wei"]
    models = {m["key"]: m for m in devnet["models"]}
    coordinator = contracts["coordinator"]
    request_created = coordinator.events.RequestCreated()
    result: dict[str, Any] = {"account": account.address}

    if "classify" in models:
        consumer = contracts[models["classify"]["examples"][0]]
        receipt = send(w3, account, consumer.functions.askSentiment("What a great day, I love it"), fee)
        request_id = request_created.process_receipt(receipt)[0]["args"]["requestId"]
        _, label, score, _, _ = wait(
            lambda: (s := consumer.functions.sentiments(request_id).call()) and (s[3] or s[4]) and s,
            f"sentiment for request {request_id}",
        )
        result["sentiment"] = {"request_id": request_id, "label": label, "scoreE6": score}

    if "echo" in models:
        data = b"hello from a dApp"
        ask = coordinator.get_function_by_signature("requestInference(bytes32,bytes,uint32)")
        receipt = send(w3, account, ask(bytes.fromhex(models["echo"]["model_id"][2:]), data, 100_000), fee)
        request_id = request_created.process_receipt(receipt)[0]["args"]["requestId"]
        fulfilled = wait(
            lambda: coordinator.events.RequestFulfilled.get_logs(
                from_block=receipt["blockNumber"], argument_filters={"requestId": request_id}
            ),
            f"echo answer to request {request_id}",
        )
        output_hash = bytes(fulfilled[0]["args"]["outputHash"])
        result["echo"] = {"request_id": request_id, "output_is_input": output_hash == Web3.keccak(data)}
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
