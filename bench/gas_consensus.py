"""Gas of a consensus request (3 nodes, quorum 2) next to a plain request of redundancy 3, from real receipts.

    python -m bench.gas_consensus [--repeats 5]

Starts anvil in a temporary folder, deploys the contracts (`node.devnet.Devnet`), stakes three nodes and deploys
`BenchConsumer` (coordinator_contract/test/utils/BenchConsumer.sol: its result callback stores keccak256(output), one
SSTORE). Each round, the same 64-byte input and output, 100,000 callback gas, ETH fees, then:
- plain: `requestRedundant` (redundancy 3) and three `deliver`s, one per node: three callbacks, three payments;
- plain + tally: the same through `TallyConsumer` (coordinator_contract/test/utils), whose callback counts equal
  outputs and keeps the first one two deliveries agree on: what a contract must add to get agreement without
  consensus requests (and it still pays every node, whatever each answered);
- consensus: `requestConsensus` (redundancy 3, quorum 2) and three `commit`s, then two `reveal`s: the second reaches
  the quorum (one callback, two payments, one slot refunded); the third node does not reveal (its reveal would be
  refused: the request is closed).
Every transaction is signed by the account that sends it in production; `gasUsed` is the whole transaction (21,000
base and calldata included). Prints each transaction's median and the totals per request, and the ratio consensus /
plain (goal: at most 1.5); writes bench/results/gas_consensus.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from web3.logs import DISCARD

from bench.gas import CALLBACK_GAS_LIMIT, INPUT, OUTPUT, GasBench, tool_version
from node.chain.commitments import commitment
from node.chain.contracts import CoordinatorAbi
from node.devnet import DEFAULT_FEE_WEI, Devnet, DevnetError, forge_build
from node.devnet.deployment import dev_account

GOAL_RATIO = 1.5
COMMIT_WINDOW_S = 600


def run(repeats: int, workdir: Path) -> dict[str, Any]:
    """Measures `repeats` rounds of both kinds; returns each transaction's samples and the per-request totals."""
    with Devnet(workdir) as dev:
        dev.start_anvil()
        forge_build()
        deployment = dev.deploy()
        bench = GasBench(dev)
        tally = dev._deploy("TallyConsumer", deployment.coordinator.address, 2)
        coordinator = dev.w3.eth.contract(
            address=deployment.coordinator.address, abi=CoordinatorAbi.from_artifacts().abi
        )
        nodes = [dev.node_account, dev_account(3), dev_account(4)]
        for account in nodes[1:]:
            dev.register_node(account)
        chain_id = int(dev.w3.eth.chain_id)
        samples: dict[str, list[int]] = {}

        def sent(name: str, fn: Any, sender: Any, value: int = 0) -> Any:
            receipt = bench.send(fn, sender, value)
            samples.setdefault(name, []).append(int(receipt["gasUsed"]))
            return receipt

        totals: dict[str, list[int]] = {"plain": [], "tally": [], "consensus": []}
        for _ in range(repeats + 1):  # the first round creates the nodes' and consumer's balance slots: not counted
            deadline = int(dev.w3.eth.get_block("latest")["timestamp"]) + 3600
            fee = 3 * DEFAULT_FEE_WEI
            before = {k: len(v) for k, v in samples.items()}
            fn = bench.consumer.functions.requestRedundant(INPUT, CALLBACK_GAS_LIMIT, 3, deadline)
            rid = dev.request_id_of(sent("plain.request", fn, dev.user, fee))
            for node in nodes:
                sent("plain.deliver", coordinator.functions.deliver(rid, OUTPUT), node)
            fn = tally.functions.requestRedundant(INPUT, CALLBACK_GAS_LIMIT, 3, deadline)
            rid = dev.request_id_of(sent("tally.request", fn, dev.user, fee))
            for node in nodes:
                sent("tally.deliver", coordinator.functions.deliver(rid, OUTPUT), node)
            if bytes(tally.functions.results(rid).call()) == bytes(32):
                raise DevnetError(f"tally request {rid}: no agreement recorded by its consumer")
            fn = bench.consumer.functions.requestConsensus(INPUT, CALLBACK_GAS_LIMIT, 3, 2, COMMIT_WINDOW_S, deadline)
            rid = dev.request_id_of(sent("consensus.request", fn, dev.user, fee))
            salts = [secrets.token_bytes(32) for _ in nodes]
            for node, salt in zip(nodes, salts, strict=True):
                c = commitment(chain_id, coordinator.address, rid, node.address, OUTPUT, salt)
                sent("consensus.commit", coordinator.functions.commit(rid, c), node)
            sent("consensus.reveal (below quorum)", coordinator.functions.reveal(rid, OUTPUT, salts[0]), nodes[0])
            last = sent(
                "consensus.reveal (reaches quorum)", coordinator.functions.reveal(rid, OUTPUT, salts[1]), nodes[1]
            )
            reached = coordinator.events.ConsensusReached().process_receipt(last, errors=DISCARD)
            if len(reached) != 1 or not reached[0]["args"]["callbackOk"]:
                raise DevnetError(f"consensus request {rid}: no quorum with a callback in the second reveal")
            for kind in totals:
                totals[kind].append(
                    sum(sum(v[before.get(k, 0) :]) for k, v in samples.items() if k.startswith(kind + "."))
                )
        return {
            "transactions": {
                k: {"median": int(statistics.median(v[1:] or v)), "samples": v} for k, v in samples.items()
            },
            "totals": {k: {"median": int(statistics.median(v[1:])), "samples": v} for k, v in totals.items()},
            "anvil": tool_version("anvil"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="rounds of each kind counted (one more is run first)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gas_consensus.json"))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    with tempfile.TemporaryDirectory(prefix="infera-gas-consensus-") as tmp:
        result = run(args.repeats, Path(tmp))
    plain, consensus = result["totals"]["plain"]["median"], result["totals"]["consensus"]["median"]
    tally = result["totals"]["tally"]["median"]
    result.update(
        {
            "command": f"python -m bench.gas_consensus --repeats {args.repeats}",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d"),
            "ratio_consensus_to_plain": round(consensus / plain, 3),
            "ratio_consensus_to_plain_with_tally": round(consensus / tally, 3),
            "goal_ratio": GOAL_RATIO,
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'transaction':<36} {'gasUsed (median)':>17}")
    for name, entry in result["transactions"].items():
        print(f"{name:<36} {entry['median']:>17,}")
    print(f"{'total: plain, redundancy 3':<36} {plain:>17,}")
    print(f"{'total: plain + tally in the consumer':<36} {tally:>17,}")
    print(f"{'total: consensus, 3 nodes, quorum 2':<36} {consensus:>17,}")
    print(f"ratio consensus / plain: {consensus / plain:.3f} (goal <= {GOAL_RATIO})")
    print(f"ratio consensus / plain with the consumer's own tally: {consensus / tally:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
