"""`python -m bench --smoke`: the whole benchmark harness, end to end, with a handful of requests per figure.

The figures of a smoke run are not benchmarks (too few samples, a shared CI machine): this checks that every phase
runs on its real devnet, that every figure of bench/results/latest.json is produced and plausible, and that the
floors are evaluated. `make bench` produces the real figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from node.devnet import ROOT


def test_smoke_run_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    benchmarks_md = (ROOT / "BENCHMARKS.md").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    r = json.loads(out.read_text())

    lat = r["latency_ms"]
    assert lat["requests"] == r["sizes"]["latency"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]

    t = r["throughput"]
    for mode in ("baseline", "pipelined", "batched"):
        assert t[f"{mode}_per_s"] > 0
        assert r["throughput_1s_blocks"][f"{mode}_per_s"] > 0
        assert t[f"{mode}_cpu_s"]["node"] > 0
    assert t["batched_vs_baseline"] == round(t["batched_per_s"] / t["baseline_per_s"], 1)

    # Each delivery costs at least one call (its send) and the node makes no call without a reason.
    assert 1 <= r["rpc_calls_per_request"] <= 5
    assert sum(r["rpc"]["by_method"].values()) == r["rpc"]["calls"]
    assert r["rpc"]["requests"] == r["sizes"]["rpc"]

    assert r["memory_mb"]["jobs"] >= r["sizes"]["memory_jobs"]
    assert 20 < r["memory_mb"]["idle"] < r["memory_mb"]["after_10k"] * 2
    assert r["memory_mb"]["heap_trims"] >= 1  # past 256 jobs the idle node returned its freed heap
    steady = r["memory_mb_steady"]
    assert steady["jobs"] >= r["sizes"]["memory_jobs"]
    assert 20 < steady["idle"] < steady["after_10k"] * 2

    bt = r["block_time"]
    assert sum(bt["blocks_after_request"].values()) == bt["requests"] == r["sizes"]["block_time_requests"]
    assert min(int(k) for k in bt["blocks_after_request"]) >= 1  # never in the request's own block

    assert 0 < r["gas"]["batch20_per_item"] < r["gas"]["single"]
    assert r["container"]["batching_ratio"] > 0
    assert r["container"]["mean_batch_size"] >= 1

    assert set(r["floors"]) >= {
        "latency_ms.p50",
        "latency_ms.p99",
        "block_time.next_block_share",
        "throughput.batched_per_s",
        "throughput.batched_vs_baseline",
        "rpc_calls_per_request",
        "gas.batch20_ratio",
        "container.batching_ratio",
        "memory_mb.idle",
        "memory_mb.growth",
    }
    assert all(isinstance(f["holds"], bool) for f in r["floors"].values())
    assert (ROOT / "BENCHMARKS.md").read_text() == benchmarks_md  # a smoke run never rewrites the record
