"""A dApp script as a developer would write it against a running `infera devnet`: it knows nothing of Infera's
Python code and reads everything (RPC, addresses, ABIs, model ids, accounts) from devnet.json.

    python tests/e2e/dapp_script.py .infera/devnet/devnet.json

It asks the SentimentConsumer for a sentiment (when the classifier is served) and the Coordinator directly for an
echo (when echo is served), from the last dApp account, and waits for each answer on-chain as the chain pushes it:
a WebSocket log subscription to the Coordinator, opened before the request is sent, read under a 60 s deadline. It
prints what came back as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from eth_account import Account
from web3 import AsyncWeb3, WebSocketProvider

#: How long one answer may take, in seconds.
ANSWER_TIMEOUT_S = 60


async def send(w3: AsyncWeb3, account: Any, fn: Any, value: int) -> Any:
    """Signs and sends `fn` from `account` with `value` wei; returns the receipt (raises when it reverted)."""
    tx = await fn.build_transaction(
        {"from": account.address, "value": value, "nonce": await w3.eth.get_transaction_count(account.address)}
    )
    tx_hash = await w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    if receipt["status"] != 1:
        raise RuntimeError(f"transaction {tx_hash.hex()} reverted")
    return receipt


async def answer_of(w3: AsyncWeb3, coordinator: Any, request_id: int) -> tuple[str, Any]:
    """The first `RequestFulfilled` or `RequestFailed` of `request_id` the open log subscription pushes, as (event
    name, its args); raises TimeoutError after `ANSWER_TIMEOUT_S`."""
    events = {e.topic: e for e in (coordinator.events.RequestFulfilled, coordinator.events.RequestFailed)}
    async with asyncio.timeout(ANSWER_TIMEOUT_S):
        async for message in w3.socket.process_subscriptions():
            log = message["result"]
            event = events.get("0x" + bytes(log["topics"][0]).hex()) if log["topics"] else None
            if event is not None:
                decoded = event.process_log(log)
                if decoded["args"]["requestId"] == request_id:
                    return decoded["event"], decoded["args"]
    raise TimeoutError(f"no answer to request {request_id}")


async def main(devnet: dict[str, Any]) -> dict[str, Any]:
    """Sends the requests to the devnet `devnet.json` describes and returns what came back on-chain."""
    assert devnet["version"] == 1, devnet["version"]
    async with AsyncWeb3(WebSocketProvider(devnet["ws_url"])) as w3:
        assert await w3.eth.chain_id == devnet["chain_id"]
        contracts = {k: w3.eth.contract(address=c["address"], abi=c["abi"]) for k, c in devnet["contracts"].items()}
        dapp = [a for a in devnet["accounts"] if a["role"] == "dapp"][-1]
        account = Account.from_key(dapp["private_key"])
        fee = devnet["fee_wei"]
        models = {m["key"]: m for m in devnet["models"]}
        coordinator = contracts["coordinator"]
        request_created = coordinator.events.RequestCreated()
        # Subscribed before any request is sent, so no answer can come before we listen.
        await w3.eth.subscribe("logs", {"address": coordinator.address})
        result: dict[str, Any] = {"account": account.address}

        if "classify" in models:
            consumer = contracts[models["classify"]["examples"][0]]
            receipt = await send(w3, account, consumer.functions.askSentiment("What a great day, I love it"), fee)
            request_id = request_created.process_receipt(receipt)[0]["args"]["requestId"]
            event, _ = await answer_of(w3, coordinator, request_id)
            assert event == "RequestFulfilled", event
            _, label, score, _, _ = await consumer.functions.sentiments(request_id).call()
            result["sentiment"] = {"request_id": request_id, "label": label, "scoreE6": score}

        if "echo" in models:
            data = b"hello from a dApp"
            ask = coordinator.get_function_by_signature("requestInference(bytes32,bytes,uint32)")
            receipt = await send(w3, account, ask(bytes.fromhex(models["echo"]["model_id"][2:]), data, 100_000), fee)
            request_id = request_created.process_receipt(receipt)[0]["args"]["requestId"]
            event, args = await answer_of(w3, coordinator, request_id)
            assert event == "RequestFulfilled", event
            result["echo"] = {"request_id": request_id, "output_is_input": args["outputHash"] == w3.keccak(data)}
    return result


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(json.dumps(asyncio.run(main(json.load(f)))))
