"""Model-server throughput with dynamic batching against batch size 1, same process, same inputs.

    python -m bench.containers [--requests 320] [--concurrency 32] [--models classify,embed]

Each model server runs in-process on a loopback port (the real runtime and the real packaged MiniLM); a pool of
`concurrency` aiohttp clients posts on-chain-shaped requests. Prints a table and writes bench/results/containers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from eth_abi.abi import encode

from containers.classify.model import ZeroShotClassifier
from containers.embed.model import EmbedModel
from containers.runtime.model import Model
from containers.runtime.server import STATE, BatchConfig, create_app

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = [
    "the",
    "service",
    "was",
    "quick",
    "and",
    "the",
    "staff",
    "were",
    "friendly",
    "but",
    "the",
    "room",
    "felt",
    "small",
    "and",
    "a",
    "little",
    "noisy",
]
MODELS: dict[str, Callable[[], Model]] = {"classify": ZeroShotClassifier, "embed": EmbedModel}


#: Input mixes, in words per text: short on-chain texts (headlines, tweets) and review-length sentences.
MIXES = {"short 4-12 words": (4, 12), "mixed 5-40 words": (5, 40)}


def sentences(n: int, min_words: int = 5, max_words: int = 40) -> list[str]:
    """Sentences with lengths spread evenly over [min_words, max_words], so batches hold mixed lengths."""
    span = max_words - min_words + 1
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(min_words + (i * 7) % span)) for i in range(n)]


async def run_load(url: str, texts: list[str], concurrency: int) -> float:
    bodies = [{"source": 0, "destination": 0, "data": encode(["string"], [t]).hex()} for t in texts]
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(f"{url}/service_output", json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
                await resp.read()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        return time.perf_counter() - started


async def measure(name: str, batching: BatchConfig, texts: list[str], concurrency: int) -> dict[str, Any]:
    app = create_app(MODELS[name](), batching=batching)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        await asyncio.wait_for(app[STATE].ready.wait(), 300)
        url = str(server.make_url("")).rstrip("/")
        await run_load(url, texts[:64], concurrency)  # warm-up: thread pools, allocator, first batches
        stats = app[STATE].batcher.stats  # type: ignore[union-attr]
        before_batches, before_items = stats.batches, stats.items
        seconds = await run_load(url, texts, concurrency)
        batches = stats.batches - before_batches
        return {
            "requests_per_s": round(len(texts) / seconds, 1),
            "seconds": round(seconds, 2),
            "mean_batch_size": round((stats.items - before_items) / max(1, batches), 1),
            "device": app[STATE].model.device,
        }
    finally:
        await server.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for mix, (low, high) in MIXES.items():
        texts = sentences(args.requests, low, high)
        for name in args.models.split(","):
            single = await measure(name, BatchConfig(max_batch_size=1, max_wait_ms=0), texts, args.concurrency)
            batched = await measure(
                name,
                BatchConfig(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms),
                texts,
                args.concurrency,
            )
            results[f"{name}, {mix}"] = {
                "batch_size_1": single,
                "dynamic_batching": batched,
                "batching_ratio": round(batched["requests_per_s"] / single["requests_per_s"], 2),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--models", default="classify,embed")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/containers.json"))
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    record = {
        "command": "python -m bench.containers "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{'model, input mix':<28} {'batch=1 req/s':>14} {'batched req/s':>14} {'ratio':>7} {'mean batch':>11}")
    for name, r in results.items():
        print(
            f"{name:<28} {r['batch_size_1']['requests_per_s']:>14} {r['dynamic_batching']['requests_per_s']:>14} "
            f"{r['batching_ratio']:>6}x {r['dynamic_batching']['mean_batch_size']:>11}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
