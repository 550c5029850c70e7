"""The node's fee policy on a real chain: requests it is not paid enough for cost it no gas and say why, and the fees
it earned are withdrawn with `infera node claim`.

One node process, the faulty echo container (its journal counts what was computed), anvil; requests are made by the
devnet's user straight to the Coordinator, in ETH and in a freshly deployed ERC-20 the node does not list.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from node.chain.contracts import model_id
from node.config import ETH_TOKEN
from node.devnet import DEFAULT_FEE_WEI
from node.devnet.processes import CONTRACTS_DIR
from tests.e2e.test_cli_ops import infera, ok
from tests.faults.conftest import MODEL, FaultRig

pytestmark = pytest.mark.faults

PARAMS = "requestInference((bytes32,uint32,uint16,uint64,address,uint256),bytes)"


def erc20_request(rig: FaultRig, input_: bytes, fee: int) -> int:
    """A request paid in a new ERC-20 (minted to the user and approved): returns its id."""
    dev = rig.dev
    assert dev.deployment is not None
    coordinator = dev.deployment.coordinator
    artifact = json.loads((CONTRACTS_DIR / "out" / "Tokens.sol" / "MockERC20.json").read_text())
    factory = dev.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"]["object"])
    address = dev._transact(factory.constructor(), dev.user)["contractAddress"]
    token = dev.w3.eth.contract(address=address, abi=artifact["abi"])
    dev._transact(token.functions.mint(dev.user.address, fee), dev.user)
    dev._transact(token.functions.approve(coordinator.address, fee), dev.user)
    deadline = int(dev.w3.eth.get_block("latest")["timestamp"]) + 3600
    params = (model_id(MODEL), 200_000, 1, deadline, token.address, fee)
    fn = coordinator.get_function_by_signature(PARAMS)(params, input_)
    return dev.request_id_of(dev._transact(fn, dev.user))


def metric(port: int, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f"{name}{{{labels}}} "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_requests_outside_the_fee_policy_cost_no_gas_and_the_earned_fee_is_claimed(rig: FaultRig) -> None:
    dev = rig.dev
    assert dev.deployment is not None
    coordinator, node = dev.deployment.coordinator, dev.node_account.address
    config = rig.configure(model={"accepted_payments": {"ETH": DEFAULT_FEE_WEI}})
    rig.start_node()
    nonce_before = dev.w3.eth.get_transaction_count(node)

    inputs = {"paid": b"paid in full", "free": b"for nothing", "cheap": b"one wei short", "token": b"in a token"}
    paid = dev.request_raw(MODEL, inputs["paid"], fee_wei=DEFAULT_FEE_WEI)
    free = dev.request_raw(MODEL, inputs["free"], fee_wei=0)
    cheap = dev.request_raw(MODEL, inputs["cheap"], fee_wei=DEFAULT_FEE_WEI - 1)
    token = erc20_request(rig, inputs["token"], 10**24)
    # Paid enough, but asking for a 2,000,000-gas callback the node would pay for: over the model's maximum.
    bomb = dev.request_raw(MODEL, b"a gas bomb", callback_gas_limit=2_000_000, fee_wei=DEFAULT_FEE_WEI)

    rig.wait_fulfilled([paid])
    rig.wait_states("the four requests outside the policy skipped", skipped=4)
    rows = dict(rig.db("SELECT request_id, error FROM jobs WHERE state = 'skipped'"))
    assert set(rows) == {str(free), str(cheap), str(token), str(bomb)}
    assert "callback gas limit 2000000 is above this node's maximum 500000" in rows[str(bomb)]
    assert f"fee per node 0 is below this node's minimum {DEFAULT_FEE_WEI}" in rows[str(free)]
    assert f"fee per node {DEFAULT_FEE_WEI - 1} is below" in rows[str(cheap)]
    assert "which echo/faulty@1 does not accept here (accepted: ETH)" in rows[str(token)]

    # No gas: one transaction (the paid delivery) and nothing computed for the others.
    assert dev.w3.eth.get_transaction_count(node) == nonce_before + 1
    assert set(rig.fulfillments()) == {paid}
    computed = rig.computed()
    assert not any(inputs[k] in data for data in computed for k in ("free", "cheap", "token"))
    assert not any(b"a gas bomb" in data for data in computed)
    for name in ("RequestFulfilled", "FailureReported"):  # the coordinator never heard from this node about them
        logs = getattr(coordinator.events, name)().get_logs(from_block=0)
        assert {e["args"]["requestId"] for e in logs} & {free, cheap, token, bomb} == set()

    delivered = json.loads(ok(infera("jobs", "show", str(paid), "--json", "--config", str(config))))
    (event,) = coordinator.events.RequestFulfilled().get_logs(from_block=0, argument_filters={"requestId": paid})
    on_chain = (event["args"]["callbackOk"], str(event["args"]["fee"]))
    assert (delivered["callback_ok"], delivered["fee_earned"]) == on_chain == (False, str(DEFAULT_FEE_WEI))
    listed = ok(infera("jobs", "list", "--state", "skipped", "--config", str(config)))
    assert listed.count("skipped") == 4
    assert "does not accept here" in listed
    port = dev.api_port
    assert metric(port, "infera_requests_skipped_total", f'model="{MODEL}",reason="fee_below_minimum"') == 2
    assert metric(port, "infera_requests_skipped_total", f'model="{MODEL}",reason="token_not_accepted"') == 1
    assert metric(port, "infera_requests_skipped_total", f'model="{MODEL}",reason="callback_gas_too_high"') == 1

    # The earned fee (protocol fee 0 on the devnet) is credited to the node and claimed to its address.
    earned = int(coordinator.functions.balanceOf(ETH_TOKEN, node).call())
    assert earned == DEFAULT_FEE_WEI
    env = {"INFERA_PRIVATE_KEY": dev.private_key_hex()}
    shown = ok(infera("node", "earnings", "--config", str(config), env=env))
    assert "0.001 ETH" in shown, shown
    zero = "0x" + "00" * 20
    refused = infera("node", "claim", "--config", str(config), "--to", zero, env=env)
    assert refused.returncode == 2  # a usage error, as every bad option
    assert "the zero address would burn the fees" in refused.stderr
    eth_before = dev.w3.eth.get_balance(node)
    held = infera("node", "claim", "--config", str(config), env=env)  # the running node holds and uses its key
    assert held.returncode == 1
    assert f"infera: key {node} is held by a running infera node (PID " in held.stderr
    out = ok(infera("node", "claim", "--config", str(config), "--force", env=env))  # on purpose: it resyncs
    assert f"to {node}" in out
    tx_hash = out.split("tx ")[1].split()[0]
    receipt = dev.w3.eth.get_transaction_receipt(tx_hash)
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert dev.w3.eth.get_balance(node) == eth_before + earned - gas_cost
    assert coordinator.functions.balanceOf(ETH_TOKEN, node).call() == 0
    assert "nothing to claim" in infera("node", "claim", "--config", str(config), "--force", env=env).stderr
    assert rig.node is not None
    assert rig.node.popen.poll() is None
