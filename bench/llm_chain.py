"""On-chain latency of the packaged LLM: from a request's transaction to its delivery, for a 16-token text answer.

    python -m bench.llm_chain [--requests 20] [--tokens 16] [--out bench/results/llm_chain.json]

One devnet (anvil mining each transaction at once, the node with `confirmations = 0` over a WebSocket, the
`containers.llm` server with `--max-context 1024`); requests are sent one after another, each waiting for its own
`RequestFulfilled`. Figures: p50 and max of the wall time from sending `requestInference` to seeing the delivery's
receipt (`request_to_answer_ms`), and of the container's own generation time from its log-free side (`generate_ms`,
one direct call of the same input per request, after the chain run), so the node's share is their difference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from eth_abi.abi import encode as abi_encode

from containers.llm.model import DEFAULT_NAME, LLMModel
from node.devnet import Devnet, wait_until

LLM = DEFAULT_NAME
INPUT_TYPES = list(LLMModel.input_types)
PROMPTS = [
    "Describe the sea in one sentence.",
    "What does an oracle do for a smart contract?",
    "Give one tip for writing clear code.",
    "Why do leaves change colour?",
    "Name a use of a hash function.",
]


def run(n: int, tokens: int) -> dict[str, Any]:
    """Sends `n` requests one by one and times each to its delivery; returns the figures (ms)."""
    with tempfile.TemporaryDirectory() as work, Devnet(Path(work)) as dev:
        dev.start_anvil()
        dep = dev.deploy()
        _, url = dev.start_container("containers.llm", "--max-context", "1024", timeout_s=300)
        node = dev.start_node(dev.write_node_config({LLM: {"url": url, "timeout_s": 120}}))
        inputs = [abi_encode(INPUT_TYPES, ["", [PROMPTS[i % len(PROMPTS)]], 0, [], 0, 0, "", tokens]) for i in range(n)]

        def answered(rid: int) -> None:
            wait_until(
                lambda: dev.is_fulfilled(rid) or None,
                timeout_s=300,
                what=f"the answer to request {rid}",
                interval_s=0.05,  # a tighter poll takes CPU from the 2-core machine the model runs on
                alive=node.check_alive,
            )

        answered(dev.request_raw(LLM, inputs[0]))  # warm-up
        latencies = []
        for raw in inputs:
            started = time.perf_counter()
            answered(dev.request_raw(LLM, raw))
            latencies.append((time.perf_counter() - started) * 1000)
        generate = []
        for raw in inputs:
            started = time.perf_counter()
            requests.post(f"{url}/service_output", json={"source": 0, "destination": 0, "data": raw.hex()}, timeout=300)
            generate.append((time.perf_counter() - started) * 1000)
        delivered = len(dep.coordinator.events.RequestFulfilled().get_logs(from_block=dep.start_block))
    return {
        "requests": n,
        "new_tokens": tokens,
        "delivered": delivered,
        "request_to_answer_ms": {"p50": statistics.median(latencies), "max": max(latencies)},
        "generate_ms": {"p50": statistics.median(generate), "max": max(generate)},
        "load_average": os.getloadavg(),
    }


def main() -> None:
    """Runs the benchmark, prints its figures and writes them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "llm_chain.json")
    args = parser.parse_args()
    figures = run(args.requests, args.tokens)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
