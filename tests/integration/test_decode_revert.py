"""A real revert on a real anvil: the Coordinator refuses a request made through the example consumer, the error
reaches the caller through the consumer, and `infera decode`, the node's simulation path and the operator commands all
name it from the data the RPC returned."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.chain.contracts import CoordinatorAbi
from node.chain.rpc import RpcError, as_reverted
from node.commands.chain_ops import OpsError, Reverts, send_tx
from node.devnet import DEFAULT_FEE_WEI, ROOT, Devnet

pytestmark = pytest.mark.usefixtures("contracts_built")

#: The example consumer's callback gas limit (SentimentConsumer.CALLBACK_GAS_LIMIT) and the lower cap set here.
CALLBACK_GAS = 200_000
CAP = 100_000
NAMED = f"InvalidCallbackGasLimit(callbackGasLimit={CALLBACK_GAS}, maxCallbackGasLimit={CAP})"


def infera(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )


def test_a_coordinator_error_through_a_consumer_is_named_from_the_rpcs_revert_data(tmp_path: Path) -> None:
    with Devnet(tmp_path / "dev") as dev:
        dev.start_anvil()
        dep = dev.deploy()
        c = dep.coordinator.functions
        limits = [
            c.minFee().call(),
            CAP,  # maxCallbackGasLimit under what the example asks for: its requests revert
            c.maxInputBytes().call(),
            c.maxOutputBytes().call(),
            c.maxRedundancy().call(),
            c.minFailureReports().call(),
            c.maxDeadlineWindow().call(),
        ]
        dev._transact(c.setLimits(*limits), dev.deployer)
        ask = dep.consumer.functions.askSentiment("what a day")
        call = {
            "from": dev.user.address,
            "to": dep.consumer.address,
            "data": dep.consumer.encode_abi("askSentiment", ["what a day"]),
            "value": hex(DEFAULT_FEE_WEI),
        }
        answer = dev.w3.provider.make_request("eth_call", [call, "latest"])  # type: ignore[arg-type]
        error = answer["error"]
        data = error["data"]
        assert isinstance(data, str)
        assert data.startswith("0xd7abf9e9")  # the raw selector a dApp developer sees

        shown = infera("decode", data)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[0] == NAMED
        assert "ICoordinator" in shown.stdout
        # Pasted as the tools print it: cast's quoted `data:` field, anvil's message, the message and data together.
        for pasted in (f'"{data}"', str(error["message"]), f"{error['message']}\n  data: {data}"):
            shown = infera("decode", pasted)
            assert shown.returncode == 0, (pasted, shown.stderr)
            assert shown.stdout.splitlines()[0] == NAMED, pasted
        piped = subprocess.run(
            [sys.executable, "-m", "node.cli", "decode", "-"],
            input=data + "\n",
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert piped.stdout.splitlines()[0] == NAMED, piped.stderr
        as_json = json.loads(infera("decode", data.removeprefix("0x"), "--json").stdout)
        assert as_json["name"] == "InvalidCallbackGasLimit"
        assert [a["value"] for a in as_json["args"]] == [str(CALLBACK_GAS), str(CAP)]

        # The node's simulation path (a raw call's error answer) names it the same way.
        reverted = as_reverted(
            RpcError("eth_call", int(error["code"]), str(error["message"]), data), CoordinatorAbi.from_artifacts(), "x"
        )
        assert str(reverted) == f"x reverted: {NAMED}"
        assert reverted.error == "InvalidCallbackGasLimit"

        # The operator commands (`infera request`, web3's ContractLogicError) too, before anything is signed.
        with pytest.raises(OpsError) as refused:
            send_tx(dev.w3, ask, dev.user, what="request", reverts=Reverts(), value=DEFAULT_FEE_WEI)
        assert f"request reverted with {NAMED}: --callback-gas must be between 1 and {CAP}" in str(refused.value)
