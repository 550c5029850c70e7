"""What the input checks cost next to the model: `check` (text limits, token count, language, unknown tokens) against
`predict` of the same texts, one at a time and in batches of 32, same process, same packaged MiniLM.

    python -m bench.input_checks [--texts 256] [--models classify,embed]

Prints a table (microseconds per text, and the check's share of check + predict) and writes
bench/results/input_checks.json. The texts are the mixes of `bench.containers` (4-12 and 5-40 words) and texts
just under the 256-token limit, where the check tokenizes the most.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.containers import MODELS, sentences

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results" / "input_checks.json"


def near_limit(n: int, count_tokens: Callable[[str], int], tokens: int = 250) -> list[str]:
    """`n` review-like texts of `tokens` MiniLM tokens or just under (markers counted), near the 256 limit."""
    rng = random.Random(7)
    base = sentences(64, 30, 40)
    texts = []
    for _ in range(n):
        words = " ".join(rng.choice(base) for _ in range(12)).split()
        while count_tokens(" ".join(words)) > tokens:
            words = words[: -max(1, (count_tokens(" ".join(words)) - tokens) // 2)]
        texts.append(" ".join(words))
    return texts


def per_text_us(run: Callable[[], Any], count: int, repeats: int = 3) -> float:
    """Best of `repeats` wall times of `run()`, in microseconds per text (`count` texts a run)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best / count * 1e6


def measure(model: Any, texts: Sequence[str]) -> dict[str, float]:
    """Check and predict costs for `texts` on a loaded `model`, in µs per text."""
    inputs = [model.check((t,)) for t in texts]  # every text must pass: the bench times the accepting path
    check = per_text_us(lambda: [model.check((t,)) for t in texts], len(texts))
    one = per_text_us(lambda: [model.predict([i]) for i in inputs], len(texts), repeats=1)
    batched = per_text_us(
        lambda: [model.predict(inputs[k : k + 32]) for k in range(0, len(inputs), 32)], len(texts), repeats=2
    )
    return {
        "check_us": check,
        "predict_1_us": one,
        "predict_32_us": batched,
        "check_share_1": check / (check + one),
        "check_share_32": check / (check + batched),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the bench; returns and writes the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--models", default="classify,embed")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    mixes = {"short 4-12 words": sentences(args.texts, 4, 12), "mixed 5-40 words": sentences(args.texts, 5, 40)}
    results: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"}
    print(f"{'model':9} {'texts':30} {'check µs':>9} {'predict µs (1)':>15} {'(32)':>8} {'share (1)':>10} {'(32)':>7}")
    for name in args.models.split(","):
        model: Any = MODELS[name]()
        model.load()
        gate = model._gate  # the TextGate the server checks with: its tokenizer counts the tokens

        def count_tokens(text: str, gate: Any = gate) -> int:
            return len(gate.token_ids(text))

        long = near_limit(max(32, args.texts // 4), count_tokens)
        for mix, texts in {**mixes, "near the limit (250 tokens)": long}.items():
            r = measure(model, texts)
            results[f"{name} / {mix}"] = r
            print(
                f"{name:9} {mix:30} {r['check_us']:9.0f} {r['predict_1_us']:15.0f} {r['predict_32_us']:8.0f} "
                f"{r['check_share_1']:10.1%} {r['check_share_32']:7.1%}"
            )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
