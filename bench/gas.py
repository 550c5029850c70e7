"""Gas of the coordinator's transactions, read from real receipts on a real anvil.

    python -m bench.gas [--repeats 5] [--batch-size 20]

Starts anvil in a temporary folder, builds and deploys NodeRegistry + Coordinator (via `node.devnet.Devnet`), stakes
the node, deploys `BenchConsumer` (coordinator_contract/test/utils/BenchConsumer.sol: its result callback stores
keccak256(output), one SSTORE), then sends each measured transaction signed by the account that sends it in
production and reads `gasUsed` from its receipt: the whole transaction, 21,000 base and calldata included. Each
transaction is also traced (debug_traceTransaction) to tally what its SSTOREs, SLOADs and LOGs cost. Prints a table
and writes bench/results/gas.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.contract import Contract
from web3.logs import DISCARD

from node.devnet import CONTRACTS_DIR, DEFAULT_FEE_WEI, ROOT, Devnet, DevnetError, forge_build, tool

INPUT = bytes(range(1, 65))  # 64 bytes, none zero: calldata at 16 gas a byte
OUTPUT = bytes(range(65, 129))  # 64 bytes, none zero
CALLBACK_GAS_LIMIT = 100_000
# Gas limit of every measured transaction. Set rather than estimated: eth_estimateGas on deliverBatch could settle on
# a limit at which the coordinator skips items (InsufficientGasForCallback is caught per item) instead of reverting.
# gasUsed does not depend on the limit.
TX_GAS_LIMIT = 8_000_000
BATCH_TARGET_RATIO = 0.60


@dataclass
class Measured:
    """One measured transaction kind: every sample's gasUsed, and the calldata and trace tally of the last."""

    what: str
    samples: list[int] = field(default_factory=list)
    trace: dict[str, Any] = field(default_factory=dict)
    calldata_bytes: int = 0
    intrinsic_gas: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> int:
        return int(statistics.median(self.samples))

    def as_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "gas_used_median": self.median,
            "gas_used_samples": self.samples,
            "calldata_bytes": self.calldata_bytes,
            "intrinsic_gas": self.intrinsic_gas,
            "trace_of_last_sample": self.trace,
            **self.extra,
        }


class GasBench:
    """Sends the measured transactions on a deployed devnet and keeps what their receipts say."""

    def __init__(self, dev: Devnet) -> None:
        self.dev = dev
        self.w3 = dev.w3
        assert dev.deployment is not None
        self.coordinator: Contract = dev.deployment.coordinator
        self.consumer: Contract = dev._deploy("BenchConsumer", self.coordinator.address)

    # ------------------------------------------------------------------------------------------ sending

    def send(self, fn: Any, sender: LocalAccount, value: int = 0) -> Any:
        """Signs and sends `fn` from `sender` with a fixed gas limit; returns the receipt (must not revert)."""
        tx = fn.build_transaction(
            {
                "from": sender.address,
                "value": value,
                "gas": TX_GAS_LIMIT,
                "nonce": self.w3.eth.get_transaction_count(sender.address, "pending"),
            }
        )
        signed = sender.sign_transaction(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(signed.raw_transaction))
        if receipt["status"] != 1:
            raise DevnetError(f"transaction {fn.fn_name} reverted")
        return receipt

    def record(self, m: Measured, receipt: Any) -> None:
        """Adds the receipt's gasUsed to `m`, with the calldata cost and trace tally of this latest sample."""
        m.samples.append(int(receipt["gasUsed"]))
        data = bytes(self.w3.eth.get_transaction(receipt["transactionHash"])["input"])
        m.calldata_bytes = len(data)
        m.intrinsic_gas = 21_000 + sum(16 if b else 4 for b in data)
        m.trace = self.trace_tally(receipt["transactionHash"])

    def trace_tally(self, tx_hash: Any) -> dict[str, Any]:
        """Count and gas of SSTORE, SLOAD and LOGn over all call frames, from anvil's struct-log trace."""
        response = self.w3.provider.make_request(
            "debug_traceTransaction",  # type: ignore[arg-type]
            ["0x" + bytes(tx_hash).hex(), {"disableStack": True, "disableMemory": True, "disableStorage": True}],
        )
        if "error" in response:
            raise DevnetError(f"debug_traceTransaction: {response['error']}")
        steps = response["result"]["structLogs"]
        if not steps:
            raise DevnetError("debug_traceTransaction returned no steps: start anvil with --steps-tracing")
        tally: dict[str, Any] = {}
        for step in steps:
            op, cost = str(step["op"]), int(step["gasCost"])
            if op in ("SSTORE", "SLOAD") or op.startswith("LOG"):
                entry = tally.setdefault("LOG" if op.startswith("LOG") else op, {"count": 0, "gas": 0})
                entry["count"] += 1
                entry["gas"] += cost
                if op == "SLOAD":
                    entry["cold"] = entry.get("cold", 0) + (cost >= 2_100)
                if op == "SSTORE":
                    # Depth 1 is the contract the transaction calls. The cost tells the write: 22,100 / 20,000 a zero
                    # slot made non-zero (cold / already touched), 5,000 / 2,900 a non-zero slot changed, 100 a slot
                    # already written in this transaction or rewritten with its own value.
                    entry.setdefault("by_depth_cost", []).append([int(step["depth"]), cost])
        tally["refund_counter_at_end"] = int(steps[-1].get("refund", 0))
        return tally

    def fulfilled(self, receipt: Any) -> list[bool]:
        """callbackOk of every RequestFulfilled event in the receipt."""
        events = self.coordinator.events.RequestFulfilled().process_receipt(receipt, errors=DISCARD)
        return [bool(e["args"]["callbackOk"]) for e in events]

    def skipped(self, receipt: Any) -> int:
        return len(self.coordinator.events.DeliverySkipped().process_receipt(receipt, errors=DISCARD))

    # ---------------------------------------------------------------------------------------- the steps

    def request(self, m: Measured | None = None) -> int:
        """One short-form request through BenchConsumer from the user (1 node, ETH fee); returns its id."""
        fn = self.consumer.functions.request(INPUT, CALLBACK_GAS_LIMIT)
        receipt = self.send(fn, self.dev.user, DEFAULT_FEE_WEI)
        if m is not None:
            self.record(m, receipt)
        return self.dev.request_id_of(receipt)

    def deliver(self, request_id: int, m: Measured) -> None:
        receipt = self.send(self.coordinator.functions.deliver(request_id, OUTPUT), self.dev.node_account)
        oks = self.fulfilled(receipt)
        if oks != [True]:
            raise DevnetError(f"deliver of request {request_id}: callbackOk {oks}, expected [True]")
        self.record(m, receipt)

    def deliver_batch(self, request_ids: list[int], m: Measured) -> None:
        items = [(rid, False, OUTPUT) for rid in request_ids]
        receipt = self.send(self.coordinator.functions.deliverBatch(items), self.dev.node_account)
        oks, skipped = self.fulfilled(receipt), self.skipped(receipt)
        if skipped or oks != [True] * len(request_ids):
            raise DevnetError(f"deliverBatch: {skipped} skipped, callbackOk {oks}")
        self.record(m, receipt)

    def report_failure(self, request_id: int, m: Measured) -> None:
        fn = self.coordinator.functions.reportFailure(request_id, "model container unavailable")
        self.record(m, self.send(fn, self.dev.node_account))

    def reclaim(self, request_id: int, m: Measured) -> None:
        self.record(m, self.send(self.coordinator.functions.reclaim(request_id), self.dev.user))

    def pass_time(self, seconds: int) -> None:
        for method, params in (("evm_increaseTime", [seconds]), ("evm_mine", [])):
            response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
            if "error" in response:
                raise DevnetError(f"{method}: {response['error']}")

    def node_info(self) -> dict[str, Any]:
        response = self.w3.provider.make_request("anvil_nodeInfo", [])  # type: ignore[arg-type]
        return dict(response.get("result") or {})


def run(repeats: int, batch_size: int, workdir: Path) -> tuple[dict[str, Measured], dict[str, Any]]:
    with Devnet(workdir) as dev:
        dev.start_anvil("--steps-tracing")  # for debug_traceTransaction; does not change gas
        forge_build()
        dev.deploy()
        dev.set_min_failure_reports(2)  # the mainnet default, which the report_failure figure is about
        bench = GasBench(dev)
        node_info = bench.node_info()

        # Requests first: their ids are then delivered one by one. Every request is alike (nextRequestId is
        # already non-zero after the constructor), so the samples should be identical.
        request = Measured("BenchConsumer.request: short form, 1 node, ETH fee, 64-byte input")
        ids = [bench.request(request) for _ in range(repeats)]

        # The first delivery also creates the node's balance slot on the coordinator (zero to non-zero); the
        # later ones add to it, as for any node that has delivered before. The median is the steady state.
        single = Measured(f"Coordinator.deliver by the node: 64-byte output, {CALLBACK_GAS_LIMIT:,} callback gas")
        for rid in ids:
            bench.deliver(rid, single)
        single.extra["callback_ok"] = True
        single.extra["first_sample_note"] = "the node's balance slot goes from zero to non-zero"

        batch = Measured(f"Coordinator.deliverBatch of {batch_size} deliveries like deliver_single")
        batch_ids = [bench.request() for _ in range(batch_size)]
        bench.deliver_batch(batch_ids, batch)
        per_item = batch.median / batch_size
        batch.extra.update(
            {
                "items": batch_size,
                "gas_used_per_item": round(per_item),
                "ratio_per_item_to_single": round(per_item / single.median, 3),
                "target_ratio": BATCH_TARGET_RATIO,
                "callback_ok": True,
            }
        )

        # minFailureReports is 2 on mainnet (the devnet sets 1; set back here): one report from the single staked
        # node records the failure and leaves the request open (no refund, no error callback).
        failure = Measured("Coordinator.reportFailure by the node: one report, below the failure quorum")
        for rid in [bench.request() for _ in range(repeats)]:
            bench.report_failure(rid, failure)

        # After the 1-hour default deadline. The refund is credited to BenchConsumer's balance on the coordinator:
        # zero to non-zero for the first reclaim, added to it for the later ones (the median).
        reclaim = Measured(
            "Coordinator.reclaim by the user after the deadline (unserved 1-node request; calls the consumer's "
            "empty rawFail)"
        )
        stale = [bench.request() for _ in range(repeats)]
        window = int(bench.coordinator.functions.defaultDeadlineWindow().call())
        bench.pass_time(window + 1)
        for rid in stale:
            bench.reclaim(rid, reclaim)
        reclaim.extra["first_sample_note"] = "the consumer's balance slot goes from zero to non-zero"

        results = {
            "request": request,
            "deliver_single": single,
            f"deliver_batch{batch_size}": batch,
            "report_failure": failure,
            "reclaim": reclaim,
        }
        return results, node_info


def contracts_provenance() -> dict[str, Any]:
    """Commit of the checkout and whether the Coordinator sources differ from it (read-only git calls)."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    changed = git("status", "--porcelain", "--", "coordinator_contract/src")
    return {"commit": git("rev-parse", "HEAD"), "src_modified": bool(changed), "src_status": changed.splitlines()}


def tool_version(name: str) -> str:
    """`anvil 1.7.1` from the first line of `anvil --version` (`anvil Version: 1.7.1`)."""
    out = subprocess.run([tool(name), "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].replace(" Version:", "") if out else f"{name} (unknown version)"


def compiler_version() -> str:
    """solc version from the Coordinator artifact's metadata, as forge recorded it."""
    path = CONTRACTS_DIR / "out" / "Coordinator.sol" / "Coordinator.json"
    try:
        metadata = json.loads(path.read_text()).get("metadata", {})
        return str(metadata.get("compiler", {}).get("version", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def foundry_settings() -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in (CONTRACTS_DIR / "foundry.toml").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("optimizer", "optimizer_runs", "evm_version"):
            settings[key.strip()] = value.strip().strip('"')
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="samples of each single transaction")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gas.json"))
    args = parser.parse_args()
    if args.repeats < 1 or args.batch_size < 1:
        parser.error("--repeats and --batch-size must be at least 1")

    with tempfile.TemporaryDirectory(prefix="infera-gas-") as tmp:
        results, node_info = run(args.repeats, args.batch_size, Path(tmp))

    record = {
        "command": f"python -m bench.gas --repeats {args.repeats} --batch-size {args.batch_size}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}; {tool_version('anvil')} (hardfork {node_info.get('hardFork', '?')})",
        "date": time.strftime("%Y-%m-%d"),
        "compiler": {"solc": compiler_version(), **foundry_settings()},
        "contracts": contracts_provenance(),
        "results": {name: m.as_json() for name, m in results.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")

    print(
        f"{'transaction':<18} {'gasUsed':>10} {'first':>10} {'samples':>8} {'calldata B':>11} "
        f"{'SSTORE (new)':>13} {'SLOAD (cold)':>13}"
    )
    for name, m in results.items():
        sstore, sload = m.trace.get("SSTORE", {}), m.trace.get("SLOAD", {})
        new_slots = sum(1 for _, cost in sstore.get("by_depth_cost", []) if cost >= 20_000)
        print(
            f"{name:<18} {m.median:>10,} {m.samples[0]:>10,} {len(m.samples):>8} {m.calldata_bytes:>11} "
            f"{sstore.get('count', 0):>7} ({new_slots:>2}) {sload.get('count', 0):>7} ({sload.get('cold', 0):>2})"
        )
    batch = next(m for name, m in results.items() if name.startswith("deliver_batch"))
    print(
        f"{'  per item':<18} {batch.extra['gas_used_per_item']:>10,}   ratio to deliver_single "
        f"{batch.extra['ratio_per_item_to_single']:.3f} (target <= {BATCH_TARGET_RATIO:.2f})"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
