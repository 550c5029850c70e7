"""Consensus requests with real node processes on anvil: k of n nodes must reveal the same output bytes.

The multi-node rig (tests/multinode.py): anvil, the contracts, node processes staked with their own dev accounts. A
`CallbackCounter` (coordinator_contract/test/utils) asks for a consensus request and counts its callbacks, keeping the
hash of the output it was handed. The first test runs on the rig's shared echo container; the second on two real
classify containers: the packaged MiniLM, and a copy whose weights file was tampered with, served under the same
model name by the odd node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.crypto import keccak

from node.api.receipts import canonical
from node.chain.commitments import module_address
from node.chain.contracts import CoordinatorAbi, model_id
from node.config import ETH_TOKEN
from node.devnet import DEFAULT_FEE_WEI
from tests.multinode import MODEL, MultiNode, RigNode

pytestmark = pytest.mark.e2e

FULFILLED = 2
CLASSIFY = "classify/minilm-sentiment@1"
NO_DIGEST = bytes(32)
COMMIT_WINDOW_S = 600


def merged(rig: MultiNode) -> Any:
    """The coordinator as a web3 contract with the consensus module's functions and events too."""
    dep = rig.dev.deployment
    assert dep is not None
    return rig.dev.w3.eth.contract(address=dep.coordinator.address, abi=CoordinatorAbi.from_artifacts().abi)


def balance(rig: MultiNode, account: str) -> int:
    return int(merged(rig).functions.balanceOf(ETH_TOKEN, account).call())


def events(rig: MultiNode, name: str, rid: int, from_block: int) -> list[Any]:
    event = getattr(merged(rig).events, name)()
    return list(event.get_logs(from_block=from_block, argument_filters={"requestId": rid}))


def verification(node: RigNode, rid: int) -> str | None:
    rows = node.db("SELECT verification FROM outcomes WHERE request_id = ?", str(rid))
    return rows[0][0] if rows else None


def ask(rig: MultiNode, consumer: Any, model: str, data: bytes, n: int, k: int, *, digest: bytes = NO_DIGEST) -> Any:
    fn = consumer.functions.askConsensus(model_id(model), data, n, k, COMMIT_WINDOW_S, digest, rig.now() + 3600)
    return rig.transact(fn, value=n * DEFAULT_FEE_WEI)


def receipt_of(node: RigNode, rid: int) -> dict[str, Any]:
    """The node's signed receipt of `rid`, checked to be signed by the node's key."""
    answer = json.loads(node.api(f"/receipts/{rid}"))
    signer = Account.recover_message(encode_defunct(text=canonical(answer["receipt"])), signature=answer["signature"])
    assert signer == node.address
    return answer["receipt"]  # type: ignore[no-any-return]


def test_three_honest_nodes_with_quorum_two_make_one_callback_with_the_agreed_answer(tmp_path: Path) -> None:
    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        assert merged(rig).functions.consensusModule().call() == module_address(dep.coordinator.address)
        nodes = [rig.add_node(name) for name in ("a", "b", "c")]
        for node in nodes:
            rig.start(node)
        consumer: Any = rig.deploy("CallbackCounter", dep.coordinator.address)
        before = {node.name: balance(rig, node.address) for node in nodes}
        refunds_before = balance(rig, consumer.address)

        receipt = ask(rig, consumer, MODEL, b"agree on this", 3, 2)
        rid, block = rig.dev.request_id_of(receipt), receipt["blockNumber"]
        rig.wait(lambda: consumer.functions.results(rid).call() == 1 or None, "the consensus callback")

        (reached,) = events(rig, "ConsensusReached", rid, block)
        agreed = bytes(reached["args"]["outputHash"])
        assert agreed == keccak(b"agree on this")  # the echo's output, as the consumer was handed it
        assert bytes(consumer.functions.outputHashes(rid).call()) == agreed
        paid = {e["args"]["node"]: e["args"]["fee"] for e in events(rig, "RequestFulfilled", rid, block)}
        assert len(paid) == 2
        assert set(paid.values()) == {DEFAULT_FEE_WEI}
        assert rig.dev.request_state(rid)["status"] == FULFILLED
        assert consumer.functions.errors(rid).call() == 0
        assert balance(rig, consumer.address) == refunds_before + DEFAULT_FEE_WEI  # the third slot, refunded
        assert {e["args"]["node"] for e in events(rig, "Committed", rid, block)} == {n.address for n in nodes}

        for node in nodes:
            # every node ends its job: paid ones agreed (commit + reveal); the last one found the quorum reached
            # before its reveal and sent nothing more (commit only): no node acts twice, none spends gas in vain.
            settled = rig.wait(
                lambda node=node: (verification(node, rid) or "").split(" ")[0] in ("agreed", "late") or None,
                f"node {node.name} to settle its consensus job",
            )
            assert settled
            if node.address in paid:
                assert verification(node, rid) == "agreed"
                assert rig.tx_count(node) == 2
                assert balance(rig, node.address) == before[node.name] + DEFAULT_FEE_WEI
            else:
                # Simulated before the quorum, its reveal may have been sent and refused on-chain: never twice.
                assert verification(node, rid) == "late"
                assert rig.tx_count(node) in (1, 2)
                assert balance(rig, node.address) == before[node.name]
            mine = receipt_of(node, rid)
            assert mine["output_hash"] == "0x" + agreed.hex()
            assert mine["input_hash"] == "0x" + keccak(b"agree on this").hex()
        assert rig.journal.read_text().count(b"agree on this".hex()) == 3  # each node computed it once

        # Anyone can check a receipt against the chain: the paid nodes' hold; the late node's names an output it
        # never revealed on-chain, and the check says so.
        for node in nodes:
            argv = ["receipt", "check", "--request", str(rid), "--url", f"http://127.0.0.1:{node.api_port}"]
            done = subprocess.run(
                [sys.executable, "-m", "node.cli", *argv, "--config", str(node.config)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if node.address in paid:
                assert done.returncode == 0, done.stderr
                assert done.stdout.startswith("OK   signed by")
            else:
                assert done.returncode == 1
                assert "FAIL output: this node has no Revealed or RequestFulfilled event" in done.stdout


def _tampered_minilm(workdir: Path) -> Path:
    """A copy of the packaged MiniLM whose weights file was changed (noise on the word embeddings): the same model
    name served from other weights."""
    import torch
    from safetensors.torch import load_file, save_file

    from containers.embed.encoder import packaged_minilm_path

    copy = workdir / "minilm-tampered"
    shutil.copytree(packaged_minilm_path(), copy)
    weights = copy / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if "word_embeddings" in k)
    generator = torch.Generator().manual_seed(19)
    tensors[name] = tensors[name] + 0.5 * torch.randn(tensors[name].shape, generator=generator)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return copy


def test_a_node_on_tampered_weights_dissents_unpaid_and_digest_bound_requests_pass_it_by(tmp_path: Path) -> None:
    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        _, honest_url = rig.dev.start_container("containers.classify", name="classify-honest")
        _, odd_url = rig.dev.start_container(
            "containers.classify", "--model-path", str(_tampered_minilm(tmp_path)), name="classify-odd"
        )
        honest_digest = bytes.fromhex(json.loads(_get(honest_url + "/info"))["model_digest"].removeprefix("0x"))
        odd_digest = bytes.fromhex(json.loads(_get(odd_url + "/info"))["model_digest"].removeprefix("0x"))
        assert honest_digest != odd_digest

        def on(url: str) -> dict[str, str | dict[str, Any]]:
            return {CLASSIFY: {"url": url, "timeout_s": 60, "max_concurrency": 2}}

        a, b = rig.add_node("a", models=on(honest_url)), rig.add_node("b", models=on(honest_url))
        odd = rig.add_node("odd", models=on(odd_url))
        rig.start(a)
        rig.start(odd)
        rig.start(b, fault="reveal-sending")  # b dies between its commit and its reveal
        registry = dep.registry.functions
        for node, digest in ((a, honest_digest), (b, honest_digest), (odd, odd_digest)):  # committed at start
            rig.wait(
                lambda node=node, digest=digest: (
                    registry.modelDigestOf(node.address, model_id(CLASSIFY)).call() == digest or None
                ),
                f"node {node.name} to commit its weights digest",
            )
        txs = {node.name: rig.tx_count(node) for node in (a, b, odd)}  # their digest commits
        assert txs == {"a": 1, "b": 1, "odd": 1}
        consumer: Any = rig.deploy("CallbackCounter", dep.coordinator.address)
        text = "The film was a delight from start to finish; I would see it again tomorrow."
        data = _abi_string(text)

        # b dies after its commit (between its two actions): a and odd reveal, disagree, no quorum yet.
        receipt = ask(rig, consumer, CLASSIFY, data, 3, 2)
        rid, block = rig.dev.request_id_of(receipt), receipt["blockNumber"]
        rig.died_at(b, "reveal-sending")
        assert verification(b, rid) == "committed"
        rig.wait(lambda: len(events(rig, "Revealed", rid, block)) == 2 or None, "a and odd to reveal", timeout_s=120)
        assert consumer.functions.results(rid).call() == 0
        revealed = {e["args"]["node"]: e["args"] for e in events(rig, "Revealed", rid, block)}
        assert revealed[a.address]["outputHash"] != revealed[odd.address]["outputHash"]
        assert bytes(revealed[a.address]["modelDigest"]) == honest_digest  # each reveal names its weights
        assert bytes(revealed[odd.address]["modelDigest"]) == odd_digest

        # b, restarted, reveals what it committed (computed once, one commit, one reveal): the honest answer wins.
        rig.start(b)
        rig.wait(lambda: consumer.functions.results(rid).call() == 1 or None, "the consensus callback")
        (reached,) = events(rig, "ConsensusReached", rid, block)
        assert reached["args"]["outputHash"] == revealed[a.address]["outputHash"]
        assert {e["args"]["node"] for e in events(rig, "RequestFulfilled", rid, block)} == {a.address, b.address}
        (dissent,) = events(rig, "Dissented", rid, block)
        assert dissent["args"]["node"] == odd.address
        assert dissent["args"]["outputHash"] == revealed[odd.address]["outputHash"]
        assert rig.tx_count(b) == txs["b"] + 2  # one commit, one reveal
        assert b.db("SELECT attempts FROM jobs WHERE request_id = ?", str(rid))[0][0] == 1
        rig.wait(lambda: verification(odd, rid) == "dissented" or None, "odd to see its dissent")
        assert receipt_of(odd, rid)["model_digest"] == "0x" + odd_digest.hex()

        # A request that requires the honest digest: the odd node may not commit (skipped, no gas), though a slot is
        # free; once the commit window is over, a and b reveal and serve it.
        odd_txs = rig.tx_count(odd)
        receipt = ask(rig, consumer, CLASSIFY, data, 3, 2, digest=honest_digest)
        rid = rig.dev.request_id_of(receipt)

        def odd_state() -> str | None:
            rows = odd.db("SELECT state FROM jobs WHERE request_id = ?", str(rid))
            return rows[0][0] if rows else None

        rig.wait(lambda: odd_state() == "skipped" or None, "odd to skip the request it may not serve")
        assert "model digest" in odd.db("SELECT error FROM jobs WHERE request_id = ?", str(rid))[0][0]
        rig.wait(lambda: len(events(rig, "Committed", rid, receipt["blockNumber"])) == 2 or None, "a and b to commit")
        assert consumer.functions.results(rid).call() == 0  # 2 of 3 slots committed: reveals wait for the window
        rig.increase_time(COMMIT_WINDOW_S + 1)
        rig.wait(lambda: consumer.functions.results(rid).call() == 1 or None, "the digest-bound callback")
        assert rig.tx_count(odd) == odd_txs

        # The odd node, pointed at the honest container, refuses to start: it committed other weights.
        rig.stop(odd)
        odd.config.write_text(odd.config.read_text().replace(odd_url, honest_url))
        proc = rig.dev.start_node(odd.config, env=odd.env, name="odd-again")
        rig.wait(lambda: proc.popen.poll() is not None or None, "the odd node to refuse to start")
        rig.dev.procs.remove(proc)
        assert proc.popen.returncode != 0
        said = odd.config.with_name("odd-again.log").read_text()
        assert honest_digest.hex() in said
        assert odd_digest.hex() in said
        assert "commit-model" in said


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return bytes(resp.read())


def _abi_string(text: str) -> bytes:
    from eth_abi.abi import encode

    return encode(["string"], [text])
