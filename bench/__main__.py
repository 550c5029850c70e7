"""`make bench`: every benchmark in one run; writes bench/results/latest.json and the tables of BENCHMARKS.md.

    python -m bench [--smoke] [--out bench/results/latest.json] [--no-markdown]

Runs, one after the other on this machine: the node on its devnets (`bench.node`: latency, RPC calls, throughput in
three modes, memory, next-block share), the coordinator's gas (`bench.gas`) and the classify model server's dynamic
batching (`bench.containers`). Every figure is checked against its floor. `--smoke` runs each with a handful of
requests (a check of the harness, in `make test`): it writes only `--out` and never touches BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import node as node_bench
from node.devnet import ROOT

MARK_START = "<!-- bench:summary:start (written by `make bench`; edit the prose around it, not this) -->"
MARK_END = "<!-- bench:summary:end -->"


def floors(r: dict[str, Any]) -> list[tuple[str, str, float, str, bool]]:
    """(figure, key in latest.json, value, floor, holds) for every floor of the benchmark issue."""
    lat, t, t1 = r["latency_ms"], r["throughput"], r.get("throughput_1s_blocks", {})
    mem = r["memory_mb"]
    rows = [
        ("latency p50", "latency_ms.p50", lat["p50"], "≤ 30 ms", lat["p50"] <= 30),
        ("latency p99", "latency_ms.p99", lat["p99"], "≤ 100 ms", lat["p99"] <= 100),
        (
            "delivered in the next block (1 s blocks)",
            "block_time.next_block_share",
            r["block_time"]["next_block_share"],
            "≥ 0.95",
            r["block_time"]["next_block_share"] >= 0.95,
        ),
        ("batched deliveries/s", "throughput.batched_per_s", t["batched_per_s"], "≥ 500", t["batched_per_s"] >= 500),
        (
            "batched ÷ send-and-wait (automine)",
            "throughput.batched_vs_baseline",
            t["batched_vs_baseline"],
            "≥ 20x",
            t["batched_vs_baseline"] >= 20,
        ),
    ]
    if "batched_vs_baseline" in t1:
        rows.append(
            (
                "batched ÷ send-and-wait (1 s blocks)",
                "throughput_1s_blocks.batched_vs_baseline",
                t1["batched_vs_baseline"],
                "≥ 20x",
                t1["batched_vs_baseline"] >= 20,
            )
        )
    rows += [
        (
            "RPC calls per request",
            "rpc_calls_per_request",
            r["rpc_calls_per_request"],
            "≤ 2",
            r["rpc_calls_per_request"] <= 2,
        ),
        (
            "gas per item, batch of 20 ÷ single",
            "gas.batch20_ratio",
            r["gas"]["batch20_ratio"],
            "≤ 0.60",
            r["gas"]["batch20_ratio"] <= 0.60,
        ),
        (
            "classify dynamic batching ratio (CPU)",
            "container.batching_ratio",
            r["container"]["batching_ratio"],
            "≥ 3x",
            r["container"]["batching_ratio"] >= 3,
        ),
        ("node RSS idle", "memory_mb.idle", mem["idle"], "≤ 150 MB", mem["idle"] <= 150),
        ("RSS growth after 10k jobs", "memory_mb.growth", mem["growth"], "≤ 0.10", mem["growth"] <= 0.10),
    ]
    return rows


def gas(smoke: bool, workdir: Path) -> dict[str, Any]:
    from bench import gas as gas_bench

    results, _ = gas_bench.run(1 if smoke else 5, 20, workdir)
    single, batch = results["deliver_single"], results["deliver_batch20"]
    per_item = batch.median / 20
    return {
        "single": single.median,
        "batch20_per_item": round(per_item),
        "batch20_ratio": round(per_item / single.median, 3),
        "request": results["request"].median,
    }


def container(smoke: bool) -> dict[str, Any]:
    from bench import containers
    from containers.runtime.server import BatchConfig

    n = 64 if smoke else 320
    texts = containers.sentences(n, 4, 12)  # short on-chain texts, the mix of the floor

    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        one = await containers.measure("classify", BatchConfig(max_batch_size=1, max_wait_ms=0), texts, 32)
        many = await containers.measure("classify", BatchConfig(max_batch_size=32, max_wait_ms=5), texts, 32)
        return one, many

    one, many = asyncio.run(both())
    return {
        "model": "classify (packaged MiniLM-L6), short 4-12-word texts, 32 concurrent clients",
        "batch_size_1_per_s": one["requests_per_s"],
        "batched_per_s": many["requests_per_s"],
        "batching_ratio": round(many["requests_per_s"] / one["requests_per_s"], 2),
        "mean_batch_size": many["mean_batch_size"],
        "device": many["device"],
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    anvil = subprocess.run(
        [str(ROOT / "node_modules/.bin/anvil"), "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "gpu": "none",
        "python": platform.python_version(),
        "anvil": anvil[0].replace(" Version:", "") if anvil else "unknown",
    }


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    t, t1, lat = r["throughput"], r.get("throughput_1s_blocks", {}), r["latency_ms"]
    lines = [
        MARK_START,
        f"Command: `{r['command']}` ({r['seconds']:.0f} s). Date: {r['date']}. Commit: `{r['commit']}`.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, no GPU; Python {m['python']}, {m['anvil']}.",
        "",
        "| figure | value | floor | holds |",
        "|---|---:|---|:---:|",
    ]
    for name, key, value, floor, ok in floors(r):
        lines.append(f"| {name} (`{key}`) | {value} | {floor} | {'yes' if ok else '**no**'} |")
    lines += [
        "",
        f"Latency over {lat['requests']} requests (ms): p50 {lat['p50']}, p95 {lat['p95']}, p99 {lat['p99']}, "
        f"max {lat['max']}, mean {lat['mean']}; meanwhile the hypervisor stole {lat['machine']['steal_pct']}% of the "
        f"machine's CPU time, processes outside the benchmark used {lat['machine']['others_cpu_s']} CPU s, and "
        f"the node / anvil / echo / requester {lat['cpu_s'].get('node')} / {lat['cpu_s'].get('anvil')} / "
        f"{lat['cpu_s'].get('echo')} / {lat['cpu_s'].get('bench')}. The five slowest (ms, of which in the node): "
        + ", ".join(f"{s['ms']} ({s['in_node_ms']})" for s in lat.get("slowest", []))
        + ".",
        "",
        "| throughput, burst of {:,} | send-and-wait | pipelined | batched |".format(r["sizes"]["burst"]),
        "|---|---:|---:|---:|",
        f"| automine (deliveries/s) | {t['baseline_per_s']} | {t['pipelined_per_s']} | {t['batched_per_s']} |",
    ]
    if t1:
        lines.append(
            f"| 1 s blocks (deliveries/s) | {t1.get('baseline_per_s', '—')} "
            f"(first {t1.get('baseline_measured_over', '—')}) | {t1.get('pipelined_per_s', '—')} | "
            f"{t1.get('batched_per_s', '—')} |"
        )
    cpu = {mode: t.get(f"{mode}_cpu_s", {}) for mode in ("baseline", "pipelined", "batched")}
    lines += [
        "",
        "CPU seconds during each automine burst (node / anvil / echo container / requester; wall): "
        + "; ".join(
            f"{mode} {c.get('node')} / {c.get('anvil')} / {c.get('echo')} / {c.get('bench')}; {c.get('wall')} s"
            for mode, c in cpu.items()
        )
        + ".",
        "",
        f"RPC calls by method over {r['rpc']['requests']} requests: "
        + ", ".join(f"`{k}` {v}" for k, v in r["rpc"]["by_method"].items())
        + ".",
        f"Gas: `deliver` {r['gas']['single']:,}; `deliverBatch` of 20, per item {r['gas']['batch20_per_item']:,}; "
        f"`request` {r['gas']['request']:,}.",
        f"Memory: RSS idle {r['memory_mb']['idle']} MB, after {r['memory_mb']['jobs']:,} jobs in blocks of "
        f"{r['sizes']['burst']:,} {r['memory_mb']['after_10k']} MB once idle (as each block's deliveries were seen: "
        f"{', '.join(str(v) for v in r['memory_mb'].get('after_each_burst', []))}; "
        f"{r['memory_mb'].get('heap_trims', 0)} heap trims when idle returned "
        f"{r['memory_mb'].get('heap_returned_mb', 0)} MB); a fresh node fed "
        f"{r['memory_mb_steady']['per_block']} a block: idle {r['memory_mb_steady']['idle']} MB, after the first "
        f"block {r['memory_mb_steady']['after_first_block']}, halfway {r['memory_mb_steady']['after_half']}, after "
        f"{r['memory_mb_steady']['jobs']:,} jobs {r['memory_mb_steady']['after_10k']} MB "
        f"({r['memory_mb_steady']['growth']:+.1%}).",
        f"Next-block share: {r['block_time']['requests']} requests at random moments on 1 s blocks, blocks from "
        "request to delivery: " + ", ".join(f"{k}: {v}" for k, v in r["block_time"]["blocks_after_request"].items()),
        MARK_END,
    ]
    return "\n".join(lines)


def write_markdown(path: Path, r: dict[str, Any]) -> None:
    text = path.read_text()
    block = markdown(r)
    pattern = re.compile(re.escape(MARK_START) + ".*?" + re.escape(MARK_END), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n## Summary\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a handful of requests per figure (checks the harness)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/latest.json")
    parser.add_argument("--no-markdown", action="store_true", help="do not rewrite the tables of BENCHMARKS.md")
    args = parser.parse_args()
    started = time.monotonic()
    sizes = node_bench.SMOKE if args.smoke else node_bench.Sizes()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    with tempfile.TemporaryDirectory(prefix="infera-bench-") as tmp:
        results: dict[str, Any] = node_bench.run(sizes, Path(tmp) / "node", list(node_bench.PHASES))
        print("bench: node done", file=sys.stderr)
        results["gas"] = gas(args.smoke, Path(tmp) / "gas")
        print("bench: gas done", file=sys.stderr)
    results["container"] = container(args.smoke)
    print("bench: container done", file=sys.stderr)
    results.update(
        command="python -m bench --smoke" if args.smoke else "make bench",
        date=time.strftime("%Y-%m-%d"),
        commit=commit.stdout.strip() or "unknown",
        machine=machine(),
        seconds=round(time.monotonic() - started, 1),
    )
    results["floors"] = {key: {"value": v, "floor": f, "holds": ok} for _, key, v, f, ok in floors(results)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if not args.smoke and not args.no_markdown:
        write_markdown(ROOT / "BENCHMARKS.md", results)
    print(markdown(results))


if __name__ == "__main__":
    main()
