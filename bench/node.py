"""The node on a real devnet: latency, throughput, RPC calls and memory, as a dApp and an operator see them.

    python -m bench.node [--smoke] [--out bench/results/node.json]

Starts anvil, deploys NodeRegistry and Coordinator, stakes the node, starts the echo container (a model server
whose model answers with its input, so everything but inference is measured) and runs the node as its own process
(`python -m node.cli run`), a fresh one for each phase with the settings that phase names. This process is the
requester: it signs its request transactions ahead of time, sends them straight to anvil and watches
`RequestFulfilled` over its own WebSocket subscription, so each time is what a dApp would see.

Phases (counts are the defaults; `--smoke` runs each with a handful):
- latency: 500 requests one after the other (automine); from the request's receipt to the delivery event.
- rpc: 200 requests one after the other with the node behind a counting JSON-RPC proxy (HTTP and WebSocket).
- throughput: a burst of 2,000 requests mined in one block, three nodes one after the other: send-and-wait (one
  transaction at a time), pipelined nonces (one delivery per transaction), batched (`deliverBatch`).
- memory: the batched node's RSS when idle, and after 10,000 jobs (more bursts).
- block time: anvil mines every second; 300 requests at random moments; the share delivered in the next block.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from eth_utils.crypto import keccak

from bench.dapp import MODEL, BenchError, Chain, Deliveries, Requester, event_signature, until
from bench.rpcproxy import CountingRpcProxy
from node.devnet import Devnet, Proc, dev_account, forge_build
from node.observability.memory import rss_kib

#: Anvil's block gas limit: a 2,000-request burst (about 120k gas each) fits in one block.
BLOCK_GAS_LIMIT = 1_000_000_000


@dataclass(frozen=True)
class Sizes:
    latency: int = 500
    rpc: int = 200
    burst: int = 2000
    memory_jobs: int = 10_000
    #: The steady-load memory run sends its jobs in blocks of this many requests.
    steady_burst: int = 200
    block_time_requests: int = 300
    block_time_rate_per_s: float = 5.0
    warmup: int = 20
    #: Send-and-wait on 1 s blocks delivers one request a block: its rate is measured over this many deliveries.
    baseline_1s: int = 20


SMOKE = Sizes(
    latency=20,
    rpc=20,
    burst=60,
    memory_jobs=300,  # past the 256 jobs after which an idle node trims its heap
    steady_burst=60,
    block_time_requests=6,
    block_time_rate_per_s=3.0,
    warmup=3,
    baseline_1s=3,
)

#: The three ways of sending, as node settings.
MODES: dict[str, dict[str, Any]] = {
    "baseline": {"max_batch": 1, "max_pending_txs": 1},
    "pipelined": {"max_batch": 1, "max_pending_txs": 64},
    "batched": {"max_batch": 32, "max_pending_txs": 64},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    kib = rss_kib(pid)
    if kib is None:
        raise BenchError(f"no resident set size for pid {pid} (not Linux, or the process is gone)")
    return kib / 1024


def machine_cpu_s() -> dict[str, float]:
    """CPU seconds of the whole machine so far, all cores (Linux /proc/stat): busy (user, nice, system, irq,
    softirq), stolen by the hypervisor, and in all."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    tick = os.sysconf("SC_CLK_TCK")
    busy = user + nice + system + irq + softirq
    return {"busy": busy / tick, "steal": steal / tick, "total": (busy + idle + iowait + steal) / tick}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class NodeRun:
    proc: Proc
    api_port: int
    name: str

    @property
    def pid(self) -> int:
        return self.proc.popen.pid


class NodeBench:
    def __init__(self, dev: Devnet, chain: Chain, sizes: Sizes, echo_url: str, profile_dir: Path | None = None) -> None:
        self.dev = dev
        self.profile_dir = profile_dir
        self.chain = chain
        self.sizes = sizes
        self.echo_url = echo_url
        assert dev.deployment is not None
        coordinator = dev.deployment.coordinator
        topic = "0x" + keccak(text=event_signature(coordinator.abi, "RequestFulfilled")).hex()
        self.deliveries = Deliveries(dev.ws_url, coordinator.address, topic)
        self.requester = Requester(dev, chain, dev.user)
        self.coordinator = coordinator.address
        self.burst_cpu_s: dict[str, float] = {}
        self.results: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------ nodes

    async def start_node(
        self,
        name: str,
        *,
        rpc_url: str | None = None,
        ws_url: str | None = None,
        store: dict[str, Any] | None = None,
        **chain: Any,
    ) -> NodeRun:
        head = int(await self.chain.call("eth_blockNumber"), 16)
        models: dict[str, str | dict[str, Any]] = {
            MODEL: {"url": self.echo_url, "timeout_s": 30, "max_concurrency": 32}
        }
        config = self.dev.write_node_config(
            models, name=name, rpc_url=rpc_url, ws_url=ws_url, start_block=head + 1, store=store, **chain
        )
        proc = self.dev.start_node(config, name=name)
        run = NodeRun(proc, self.dev.api_port, name)
        await self.ready(run)
        if self.profile_dir is not None:  # py-spy samples the node until it exits (`pip install py-spy`)
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            out = self.profile_dir / f"{name}.txt"
            self.dev.start(f"py-spy-{name}", ["py-spy", "record", "-p", str(run.pid), "-f", "raw", "-o", str(out)])
        await self.serve(run, self.sizes.warmup)  # imports, connections and caches warm before anything is timed
        await self.settled(run)
        return run

    async def status(self, run: NodeRun) -> dict[str, Any] | None:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{run.api_port}/readyz") as resp:
                if resp.status != 200:
                    return None
                body: dict[str, Any] = await resp.json()
                return body
        except aiohttp.ClientError:
            return None

    async def heap(self, run: NodeRun) -> dict[str, Any]:
        """What the node's /status says of its heap trims (memory it returned to the OS when idle after a burst)."""
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{run.api_port}/status") as resp:
            memory: dict[str, Any] = (await resp.json())["memory"]
        return {"heap_trims": memory["heap_trims"], "heap_returned_mb": memory["heap_returned_mb"]}

    async def ready(self, run: NodeRun) -> None:
        async def check() -> dict[str, Any] | None:
            run.proc.check_alive()
            return await self.status(run)

        await until(check, timeout_s=60, what=f"node {run.name} /readyz", every_s=0.1)

    async def settled(self, run: NodeRun) -> None:
        """Waits until the node has no transaction in flight and nothing queued (its books are closed)."""

        async def check() -> bool:
            run.proc.check_alive()
            body = await self.status(run)
            return body is not None and body.get("txs_in_flight") == 0 and body.get("queued") == 0

        await until(check, timeout_s=120, what=f"node {run.name} to settle its transactions", every_s=0.05)

    async def stop_node(self, run: NodeRun) -> None:
        code = await asyncio.to_thread(self.dev.stop, run.proc)  # the loop keeps serving the proxy meanwhile
        if code != 0:
            raise BenchError(f"node {run.name} exited with {code}; log: {run.proc.log_path}")
        for spy in [p for p in self.dev.procs if p.name == f"py-spy-{run.name}"]:
            await asyncio.to_thread(spy.popen.wait, 60)  # it writes its profile once the node has exited
            self.dev.procs.remove(spy)

    async def serve(self, run: NodeRun, n: int) -> list[int]:
        """Sends `n` requests one by one, each after the last was delivered; returns their ids."""
        ids = []
        for raw in self.requester.sign(n):
            rid, _ = await self.requester.send_sync(raw)
            await self.deliveries.wait_all([rid], timeout_s=30, alive=run.proc.check_alive)
            ids.append(rid)
        return ids

    # ----------------------------------------------------------------------------------------------- phases

    async def latency(self) -> None:
        run = await self.start_node("latency")
        samples: dict[int, float] = {}
        raws = self.requester.sign(self.sizes.latency)
        ours_before, machine_before = self.cpu(run), machine_cpu_s()
        for raw in raws:
            rid, _ = await self.requester.send_sync(raw)
            sent = time.monotonic()
            await self.deliveries.wait_all([rid], timeout_s=30, alive=run.proc.check_alive)
            samples[rid] = (self.deliveries.seen[rid][0] - sent) * 1000
        ours_after, machine_after = self.cpu(run), machine_cpu_s()
        await self.stop_node(run)
        ours = {k: round(ours_after[k] - ours_before[k], 2) for k in ours_after}
        # The node's own time for each (its log: from the RequestCreated log's arrival to the delivery's receipt), so
        # that the slowest requests say where they spent their time: in the node, or in anvil and the machine.
        held = {
            int(m[1]): float(m[2])
            for m in re.finditer(r"request (\d+): delivered \S+ in (\d+) ms", run.proc.log_path.read_text())
        }
        slowest = sorted(samples.items(), key=lambda item: -item[1])[:5]
        machine = {k: machine_after[k] - machine_before[k] for k in machine_after}
        values = list(samples.values())
        self.results["latency_ms"] = {
            "requests": len(values),
            "p50": round(percentile(values, 50), 2),
            "p95": round(percentile(values, 95), 2),
            "p99": round(percentile(values, 99), 2),
            "max": round(max(values), 2),
            "mean": round(statistics.fmean(values), 2),
            "slowest": [{"ms": round(ms, 1), "in_node_ms": held.get(rid)} for rid, ms in slowest],
            # What else the machine did meanwhile: a slow run with CPU stolen by the hypervisor or used by processes
            # outside the benchmark is the machine's, not the node's.
            "cpu_s": ours,
            "machine": {
                "steal_pct": round(100 * machine["steal"] / machine["total"], 1),
                "busy_pct": round(100 * machine["busy"] / machine["total"], 1),
                "others_cpu_s": round(machine["busy"] - sum(ours.values()), 2),
            },
        }

    async def rpc_cost(self) -> None:
        async with CountingRpcProxy(self.dev.rpc_port) as proxy:
            run = await self.start_node("rpc", rpc_url=proxy.http_url, ws_url=proxy.ws_url)
            proxy.reset()
            ids = await self.serve(run, self.sizes.rpc)
            await self.settled(run)
            total, methods = proxy.total, proxy.by_method()
            await self.stop_node(run)
        # The wallet-balance gauge re-reads eth_getBalance every 15 s whatever the load: a clock, not a per-request
        # cost; counted apart.
        polls = methods.get("eth_getBalance", 0)
        self.results["rpc_calls_per_request"] = round((total - polls) / len(ids), 3)
        self.results["rpc"] = {
            "requests": len(ids),
            "calls": total,
            "by_method": methods,
            "balance_polls": polls,
            "how": "one request at a time, each after the last was delivered: no batching to share calls",
        }

    def cpu(self, run: NodeRun) -> dict[str, float]:
        """CPU seconds used so far by each process of the system under test, and by this one."""
        pids = {"node": run.pid, **{p.name: p.popen.pid for p in self.dev.procs if p.name in ("anvil", "echo")}}
        return {**{name: cpu_s(pid) for name, pid in pids.items()}, "bench": cpu_s(os.getpid())}

    async def burst(self, run: NodeRun, n: int, *, interval_s: int = 0, measure_first: int | None = None) -> float:
        """Mines `n` requests in one block and waits for the deliveries (all, or the first `measure_first`); returns
        deliveries per second from that block to the last delivery counted. `interval_s`: mine a block that often
        from then on, instead of one per transaction."""
        raws = self.requester.sign(n)
        await self.chain.call("evm_setAutomine", False)
        try:
            await self.requester.send_all(raws)
            await self.chain.call("evm_mine")
            mined = time.monotonic()
            cpu_before = self.cpu(run)
        finally:
            if interval_s:
                await self.chain.call("evm_setIntervalMining", interval_s)
            else:
                await self.chain.call("evm_setAutomine", True)
        block = await self.chain.call("eth_getBlockByNumber", "latest", False)
        logs = await self.chain.call(
            "eth_getLogs", {"fromBlock": block["number"], "toBlock": block["number"], "address": self.coordinator}
        )
        ids = self.requester.request_ids(logs)
        if len(ids) != n:
            raise BenchError(f"the burst block created {len(ids)} of {n} requests")
        if measure_first is not None:
            await self.deliveries.wait_count(ids, measure_first, timeout_s=600, alive=run.proc.check_alive)
            counted = sorted(t for i in ids if (t := self.deliveries.seen.get(i, (None, 0))[0]) is not None)
            last, done = counted[measure_first - 1], measure_first
        else:
            await self.deliveries.wait_all(ids, timeout_s=600, alive=run.proc.check_alive)
            last, done = max(self.deliveries.seen[i][0] for i in ids), n
        cpu_after = self.cpu(run)
        self.burst_cpu_s = {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after}
        self.burst_cpu_s["wall"] = round(time.monotonic() - mined, 2)
        return done / (last - mined)

    async def throughput(self, mode: str) -> None:
        run = await self.start_node(mode, **MODES[mode])
        idle = rss_mb(run.pid)
        rate = await self.burst(run, self.sizes.burst)
        self.results["throughput"] = {f"{mode}_per_s": round(rate, 1), f"{mode}_cpu_s": self.burst_cpu_s}
        if mode == "batched":
            jobs = self.sizes.warmup + self.sizes.burst
            after_each = [round(rss_mb(run.pid), 1), *await self.feed(run, jobs, self.sizes.burst)]
            jobs = max(jobs, self.sizes.memory_jobs)
            after = rss_mb(run.pid)
            self.results["memory_mb"] = {
                "idle": round(idle, 1),
                "after_10k": round(after, 1),
                "jobs": jobs,
                "growth": round(after / idle - 1, 3),
                "after_each_burst": after_each,
                **await self.heap(run),
            }
        await self.stop_node(run)

    async def throughput_postgresql(self) -> None:
        """The batched node's burst with its store on PostgreSQL (a throwaway cluster on this machine, fsync off as
        the tests run it) instead of SQLite: `throughput.batched_postgresql_per_s`, to set beside `batched_per_s`."""
        from node.devnet.postgres import ThrowawayPostgres

        with ThrowawayPostgres() as pg:
            run = await self.start_node("batched_pg", store={"url": pg.new_database()}, **MODES["batched"])
            rate = await self.burst(run, self.sizes.burst)
            self.results["throughput"] = {
                "batched_postgresql_per_s": round(rate, 1),
                "batched_postgresql_cpu_s": self.burst_cpu_s,
            }
            await self.stop_node(run)

    async def feed(self, run: NodeRun, done: int, per_block: int) -> list[float]:
        """Sends blocks of `per_block` requests until `memory_jobs` (counting the `done` ones) are served and
        settled; returns the node's RSS after each block."""
        after_each = []
        while done < self.sizes.memory_jobs:
            n = min(per_block, self.sizes.memory_jobs - done)
            await self.burst(run, n)
            done += n
            after_each.append(round(rss_mb(run.pid), 1))
        await self.settled(run)
        return after_each

    async def memory_steady(self) -> None:
        """RSS of a fresh batched node, idle and after 10,000 jobs that come 200 a block: what the node keeps per job
        (a leak would grow it), apart from the high-water mark a 2,000-request block leaves in the allocator."""
        run = await self.start_node("memory_steady", **MODES["batched"])
        idle = rss_mb(run.pid)
        after_each = await self.feed(run, self.sizes.warmup, self.sizes.steady_burst)
        jobs = max(self.sizes.warmup, self.sizes.memory_jobs)
        after = rss_mb(run.pid)
        self.results["memory_mb_steady"] = {
            "idle": round(idle, 1),
            "after_10k": round(after, 1),
            "jobs": jobs,
            "per_block": self.sizes.steady_burst,
            "growth": round(after / idle - 1, 3),
            "after_first_block": after_each[0],
            "after_half": after_each[len(after_each) // 2],
            **await self.heap(run),
        }
        await self.stop_node(run)

    async def throughput_block_time(self, mode: str) -> None:
        """The same burst on a chain that mines a block a second: what each mode gets out of a block."""
        run = await self.start_node(f"{mode}_1s", **MODES[mode])
        first = min(self.sizes.burst, self.sizes.baseline_1s) if mode == "baseline" else None
        try:
            rate = await self.burst(run, self.sizes.burst, interval_s=1, measure_first=first)
        finally:
            await self.chain.call("evm_setIntervalMining", 0)
            await self.chain.call("evm_setAutomine", True)
        self.results["throughput_1s_blocks"] = {
            f"{mode}_per_s": round(rate, 2),
            **({f"{mode}_measured_over": first} if first else {}),
        }
        await self.stop_node(run)

    async def block_time(self) -> None:
        """Interval mining every second: the share of requests delivered in the block after their own."""
        run = await self.start_node("block_time")
        await self.chain.call("evm_setAutomine", False)
        await self.chain.call("evm_setIntervalMining", 1)
        try:
            raws = self.requester.sign(self.sizes.block_time_requests)
            rng = random.Random(7)
            span = len(raws) / self.sizes.block_time_rate_per_s
            offsets = sorted(rng.uniform(0, span) for _ in raws)
            start = time.monotonic()

            async def send_at(offset: float, raw: str) -> tuple[int, int]:
                await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
                return await self.requester.send_sync(raw)

            sent = await asyncio.gather(*(send_at(o, r) for o, r in zip(offsets, raws, strict=True)))
            await self.deliveries.wait_all([rid for rid, _ in sent], timeout_s=120, alive=run.proc.check_alive)
        finally:
            await self.chain.call("evm_setIntervalMining", 0)
            await self.chain.call("evm_setAutomine", True)
        gaps = [self.deliveries.seen[rid][1] - block for rid, block in sent]
        self.results["block_time"] = {
            "block_time_s": 1,
            "requests": len(gaps),
            "next_block_share": round(sum(1 for g in gaps if g == 1) / len(gaps), 4),
            "blocks_after_request": {str(g): gaps.count(g) for g in sorted(set(gaps))},
        }
        await self.stop_node(run)


#: Each phase runs on a devnet of its own (fresh anvil, contracts, echo container): anvil's cost per block grows
#: with the length of its chain, so phases that come later would otherwise pay for the blocks of the earlier ones.
PHASES: dict[str, Callable[[NodeBench], Awaitable[None]]] = {
    "latency": NodeBench.latency,
    "rpc": NodeBench.rpc_cost,
    **{f"throughput_{m}": (lambda b, m=m: b.throughput(m)) for m in MODES},  # type: ignore[misc]
    "throughput_batched_postgresql": NodeBench.throughput_postgresql,
    **{f"throughput_1s_{m}": (lambda b, m=m: b.throughput_block_time(m)) for m in MODES},  # type: ignore[misc]
    "block_time": NodeBench.block_time,
    "memory_steady": NodeBench.memory_steady,
}


async def run_phase(name: str, workdir: Path, sizes: Sizes, profile_dir: Path | None) -> dict[str, Any]:
    with Devnet(workdir / name, model_name=MODEL) as dev:
        dev.start_anvil("--gas-limit", str(BLOCK_GAS_LIMIT))
        dev.deploy()
        dev.user = dev_account(3)  # an account of the requester's own
        _, echo_url = dev.start_container("containers.echo", "--max-wait-ms", "0", name="echo")
        async with aiohttp.ClientSession() as session:
            chain = Chain(session, dev.rpc_url)
            bench = NodeBench(dev, chain, sizes, echo_url, profile_dir)
            watcher = asyncio.create_task(bench.deliveries.run(session))
            await asyncio.wait_for(bench.deliveries.subscribed.wait(), 10)
            try:
                await PHASES[name](bench)
            finally:
                watcher.cancel()
                await asyncio.to_thread(dev.stop_all)
        return bench.results


def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def summarize(results: dict[str, Any]) -> None:
    """Ratios between the modes, once all are in."""
    for section in ("throughput", "throughput_1s_blocks"):
        t = results.get(section, {})
        if "baseline_per_s" in t:
            for mode in ("pipelined", "batched"):
                if f"{mode}_per_s" in t:
                    t[f"{mode}_vs_baseline"] = round(t[f"{mode}_per_s"] / t["baseline_per_s"], 1)


def run(sizes: Sizes, workdir: Path, phases: list[str], profile_dir: Path | None = None) -> dict[str, Any]:
    forge_build()
    results: dict[str, Any] = {}
    for name in phases:
        started = time.monotonic()
        merge(results, asyncio.run(run_phase(name, workdir, sizes, profile_dir)))
        print(f"bench.node: {name} done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    summarize(results)
    return {**results, "sizes": asdict(sizes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a handful of requests per phase (checks the harness)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/node.json"))
    parser.add_argument("--keep", type=Path, help="work folder to keep (logs, node stores); default: a temp folder")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--burst", type=int, help="requests per burst (default 2000)")
    parser.add_argument("--profile", type=Path, help="folder for py-spy profiles of each node (collapsed stacks)")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else Sizes()
    if args.burst:
        sizes = dataclasses.replace(sizes, burst=args.burst)
    phases = [p for p in args.phases.split(",") if p]
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if args.keep:
        results = run(sizes, args.keep, phases, args.profile)
    else:
        with tempfile.TemporaryDirectory(prefix="infera-bench-") as tmp:
            results = run(sizes, Path(tmp), phases, args.profile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
