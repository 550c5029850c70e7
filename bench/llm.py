"""The LLM server's engine (containers/llm) measured in-process: batching, first token, constraints, determinism.

    python -m bench.llm [--smoke] [--out bench/results/llm.json] [--determinism 200]

One `LLMModel()` (the packaged SmolLM2-135M-Instruct GGUF, dequantized; the engine's 16 decode rows) is loaded once;
every figure is a ratio against a baseline measured in the same process, interleaved round by round, because the
machine is shared (the load average is printed and stored with the figures). Figures:

1. **Decode throughput** (`throughput`): generated tokens (`len(Generation.tokens)`, actual, not the cap) per
   wall-clock second, free text, `--new-tokens` (32) each, on the same 16 varied prompts two ways: one request at a
   time (submit, wait, next) and all 16 submitted together. `ratio` = batched ÷ one-at-a-time (issue floor: ≥ 4x on
   CPU). Rounds alternate the two modes.
2. **Time to first token** (`first_token_ms`): p50 of `Generation.first_token_s` (submit → the prefill's token) from
   the same runs: alone, and among 16 concurrent (where a request waits for the prefills queued before it).
3. **Constrained decoding** (`constrained`): the same prompts one at a time as free text, CHOICE (["yes","no"]),
   INTEGER (1..10) and JSON (a two-field schema), interleaved prompt by prompt. Per request: `total_s`; per decode
   step: (`total_s` - `first_token_s`) ÷ decode steps (steps after the prefill, the stop token's included), so the
   grammar's bitmask per step is compared with free text's argmax per step. Ratios are against free text.
4. **Determinism** (`determinism`): N requests (free text, `--determinism-tokens` new tokens) each run alone and
   then all N submitted at once (continuous batching: rows join and leave at different steps): how many
   `Generation.logits_sha256` (the bytes of every logit row a token was chosen from) and texts differ. Then the naive
   baseline on the engine's own weights, with attention set back to "sdpa" after the engine is closed: Hugging Face
   `model.generate` (greedy) on left-padded batches of 8 against each prompt alone; how many texts differ and how
   many requests' raw logits (`output_logits=True`, compared bit for bit over the steps both runs took) differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from containers.llm.engine import Generation
from containers.llm.model import LLMModel

RESULTS = Path(__file__).parent / "results"
TOPICS = [
    "how tides work",
    "why the sky is blue",
    "the history of the printing press",
    "how a bicycle stays upright",
    "what a blockchain oracle does",
    "how bread rises",
    "the life cycle of a star",
    "how vaccines train the immune system",
    "why cats purr",
    "how a compiler turns code into machine instructions",
    "the causes of the French Revolution",
    "how solar panels make electricity",
    "why leaves change colour in autumn",
    "how a credit card payment is approved",
    "the rules of chess for a beginner",
    "how coffee is roasted",
    "what makes a good password",
    "how airplanes generate lift",
    "the water cycle",
    "how earthquakes are measured",
]
FORMS = [
    "Explain {} in detail, step by step.",
    "Write a long paragraph about {}.",
    "Describe {} to a curious student, with examples.",
    "Give a thorough overview of {}.",
]
JSON_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"topic": {"type": "string", "maxLength": 24}, "score": {"type": "integer"}},
        "required": ["topic", "score"],
        "additionalProperties": False,
    }
)


def prompts(n: int) -> list[str]:
    """`n` distinct prompts that ask for long answers, so free text runs to its cap rather than stopping early."""
    out = [FORMS[(i // len(TOPICS)) % len(FORMS)].format(TOPICS[i % len(TOPICS)]) for i in range(n)]
    return [p if i < len(TOPICS) * len(FORMS) else f"{p} (variant {i})" for i, p in enumerate(out)]


def free_args(model: LLMModel, prompt: str, new_tokens: int) -> tuple[Any, ...]:
    return model.check(("", [prompt], 0, [], 0, 0, "", new_tokens))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_alone(model: LLMModel, batch: list[tuple[Any, ...]]) -> tuple[list[Generation], float]:
    start = time.perf_counter()
    gens = [model.submit(args).result() for args in batch]
    return gens, time.perf_counter() - start


def run_together(model: LLMModel, batch: list[tuple[Any, ...]]) -> tuple[list[Generation], float]:
    start = time.perf_counter()
    futures = [model.submit(args) for args in batch]
    gens = [f.result() for f in futures]
    return gens, time.perf_counter() - start


def decode_steps(gen: Generation) -> int:
    """Forward passes after the prefill: one per token after the first, plus the stop token's when it stopped."""
    return max(1, len(gen.tokens) - 1 + (gen.finish == "stop"))


# -- 1 and 2: throughput and first token ------------------------------------------------------------------------------


def measure_throughput(model: LLMModel, rounds: int, concurrency: int, new_tokens: int) -> dict[str, Any]:
    batch = [free_args(model, p, new_tokens) for p in prompts(concurrency)]
    tokens = {"alone": 0, "together": 0}
    wall = {"alone": 0.0, "together": 0.0}
    first: dict[str, list[float]] = {"alone": [], "together": []}
    per_round = []
    for r in range(rounds):
        order = ("alone", "together") if r % 2 == 0 else ("together", "alone")
        rates = {}
        for mode in order:
            gens, seconds = (run_alone if mode == "alone" else run_together)(model, batch)
            n = sum(len(g.tokens) for g in gens)
            tokens[mode] += n
            wall[mode] += seconds
            first[mode] += [g.first_token_s for g in gens]
            rates[mode] = n / seconds
        per_round.append(round(rates["together"] / rates["alone"], 2))
    alone, together = tokens["alone"] / wall["alone"], tokens["together"] / wall["together"]
    return {
        "rounds": rounds,
        "concurrency": concurrency,
        "new_tokens_cap": new_tokens,
        "tokens_per_request_mean": round(tokens["alone"] / (rounds * concurrency), 1),
        "alone_tokens_per_s": round(alone, 1),
        "together_tokens_per_s": round(together, 1),
        "ratio": round(together / alone, 2),
        "ratio_per_round": per_round,
        "first_token_ms": {
            "alone_p50": round(1000 * statistics.median(first["alone"]), 1),
            "together_p50": round(1000 * statistics.median(first["together"]), 1),
            "together_p95": round(1000 * pct(first["together"], 0.95), 1),
        },
    }


# -- 3: constrained decoding ------------------------------------------------------------------------------------------


def measure_constraints(model: LLMModel, n: int, new_tokens: int) -> dict[str, Any]:
    kinds: dict[str, Any] = {
        "text": lambda p: ("", [p], 0, [], 0, 0, "", new_tokens),
        "choice": lambda p: ("", [f"Is this a question about science? {p}"], 1, ["yes", "no"], 0, 0, "", 0),
        "integer": lambda p: ("", [f"Rate how hard this is to explain: {p}"], 2, [], 1, 10, "", 0),
        "json": lambda p: ("", [f"Name the topic of this and rate it: {p}"], 3, [], 0, 0, JSON_SCHEMA, 48),
    }
    step_ms: dict[str, list[float]] = {k: [] for k in kinds}
    request_ms: dict[str, list[float]] = {k: [] for k in kinds}
    tokens: dict[str, list[int]] = {k: [] for k in kinds}
    for i, prompt in enumerate(prompts(n)):
        names = list(kinds)
        names = names[i % len(names) :] + names[: i % len(names)]  # rotate the order: no kind always goes first
        for name in names:
            gen = model.submit(model.check(kinds[name](prompt))).result()
            step_ms[name].append(1000 * (gen.total_s - gen.first_token_s) / decode_steps(gen))
            request_ms[name].append(1000 * gen.total_s)
            tokens[name].append(len(gen.tokens))
    base_step, base_request = statistics.median(step_ms["text"]), statistics.median(request_ms["text"])
    return {
        "requests_per_kind": n,
        "kinds": {
            name: {
                "tokens_mean": round(statistics.mean(tokens[name]), 1),
                "ms_per_step_p50": round(statistics.median(step_ms[name]), 2),
                "ms_per_request_p50": round(statistics.median(request_ms[name]), 1),
                "step_ratio_vs_text": round(statistics.median(step_ms[name]) / base_step, 2),
                "request_ratio_vs_text": round(statistics.median(request_ms[name]) / base_request, 2),
            }
            for name in kinds
        },
    }


# -- 4: determinism ---------------------------------------------------------------------------------------------------


def measure_engine_determinism(model: LLMModel, n: int, new_tokens: int) -> dict[str, Any]:
    batch = [free_args(model, p, new_tokens) for p in prompts(n)]
    alone, _ = run_alone(model, batch)
    model.engine.stats.busiest = 0  # the most rows busy at once in this phase, not in the earlier ones
    together, _ = run_together(model, batch)
    return {
        "requests": n,
        "new_tokens_cap": new_tokens,
        "busiest_rows": model.engine.stats.busiest,
        "logits_differ": sum(a.logits_sha256 != b.logits_sha256 for a, b in zip(alone, together, strict=True)),
        "text_differ": sum(a.text != b.text for a, b in zip(alone, together, strict=True)),
    }


def measure_naive_determinism(model: LLMModel, n: int, new_tokens: int, batch_size: int) -> dict[str, Any]:
    """HF `generate` on the engine's weights with stock "sdpa" attention: left-padded batches vs each prompt alone.
    Only call after the engine is closed (its slot attention is replaced here)."""
    import torch

    hf: Any = model.engine.model
    hf.set_attn_implementation("sdpa")
    tok: Any = model._tokenizer
    tok.padding_side = "left"
    pad = model.engine._pad
    texts = [
        tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in prompts(n)
    ]
    kwargs: dict[str, Any] = {
        "max_new_tokens": new_tokens,
        "do_sample": False,
        "output_logits": True,
        "return_dict_in_generate": True,
        "pad_token_id": pad,
    }

    def generate(chunk: list[str]) -> tuple[list[str], list[list[Any]]]:
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = hf.generate(**enc, **kwargs)
        width = enc["input_ids"].shape[1]
        outs, logits = [], []
        for i in range(len(chunk)):
            new = out.sequences[i, width:].tolist()
            stop = next((j for j, t in enumerate(new) if t in model.engine._stop or t == pad), len(new))
            outs.append(str(tok.decode(new[:stop], skip_special_tokens=True)))
            logits.append([step[i] for step in out.logits[: stop + (stop < len(new))]])
        return outs, logits

    text_differ = logits_differ = 0
    max_abs = 0.0
    for start in range(0, n, batch_size):
        chunk = texts[start : start + batch_size]
        batched_text, batched_logits = generate(chunk)
        for i, prompt in enumerate(chunk):
            alone_text, alone_logits = generate([prompt])
            text_differ += alone_text[0] != batched_text[i]
            steps = min(len(alone_logits[0]), len(batched_logits[i]))
            pairs = list(zip(alone_logits[0][:steps], batched_logits[i][:steps], strict=True))
            if any(not torch.equal(a, b) for a, b in pairs):
                logits_differ += 1
            max_abs = max([max_abs] + [float((a.float() - b.float()).abs().max()) for a, b in pairs])
    return {
        "requests": n,
        "batch_size": batch_size,
        "new_tokens_cap": new_tokens,
        "text_differ": text_differ,
        "logits_differ": logits_differ,
        "max_abs_logit_diff": max_abs,
    }


# -- the run ----------------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": "none"}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def table(r: dict[str, Any]) -> str:
    t, c, d, nv = r["throughput"], r["constrained"]["kinds"], r["determinism"]["engine"], r["determinism"]["naive"]
    ft = t["first_token_ms"]
    rows = [
        ("decode tokens/s, one at a time", f"{t['alone_tokens_per_s']}", ""),
        (f"decode tokens/s, {t['concurrency']} together", f"{t['together_tokens_per_s']}", f"x{t['ratio']}"),
        ("first token p50 ms, alone", f"{ft['alone_p50']}", ""),
        (f"first token p50 ms, {t['concurrency']} together", f"{ft['together_p50']}", ""),
    ]
    for name, k in c.items():
        rows.append(
            (
                f"{name}: ms/step p50, ms/request p50 ({k['tokens_mean']} tok)",
                f"{k['ms_per_step_p50']}, {k['ms_per_request_p50']}",
                f"x{k['step_ratio_vs_text']}, x{k['request_ratio_vs_text']}",
            )
        )
    rows.append(("engine: logits (text) differ, alone vs batched", f"{d['logits_differ']} ({d['text_differ']})", ""))
    rows.append(
        (f"naive HF batch {nv['batch_size']}: logits (text) differ", f"{nv['logits_differ']} ({nv['text_differ']})", "")
    )
    width = max(len(a) for a, _, _ in rows)
    lines = [f"{a:<{width}}  {b:>16}  {c}" for a, b, c in rows]
    lines.append(f"of {d['requests']} / {nv['requests']} requests; load average {r['load_before']} → {r['load_after']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.llm", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a handful of requests per figure (checks, not figures)")
    parser.add_argument("--out", type=Path, default=RESULTS / "llm.json")
    parser.add_argument("--rounds", type=int, default=4, help="alternating one-at-a-time / together rounds")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--constrained", type=int, default=16, help="prompts per answer kind")
    parser.add_argument("--determinism", type=int, default=200, help="requests compared alone vs batched")
    parser.add_argument("--determinism-tokens", type=int, default=16, help="new tokens per determinism request")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.new_tokens, args.constrained, args.determinism, args.determinism_tokens = 1, 8, 2, 8, 8
    concurrency = 16
    result: dict[str, Any] = {"argv": vars(args) | {"out": str(args.out)}, "smoke": args.smoke}
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["machine"] = machine()
    result["load_before"] = load()
    started = time.perf_counter()
    model = LLMModel()
    model.load()
    result["load_model_s"] = round(time.perf_counter() - started, 1)
    result["model"] = model.name
    result["rows"] = model.rows
    try:
        result["throughput"] = measure_throughput(model, args.rounds, concurrency, args.new_tokens)
        result["constrained"] = measure_constraints(model, args.constrained, args.new_tokens)
        engine = measure_engine_determinism(model, args.determinism, args.determinism_tokens)
    finally:
        model.close()
    naive = measure_naive_determinism(model, args.determinism, args.determinism_tokens, 8)
    result["determinism"] = {"engine": engine, "naive": naive}
    result["load_after"] = load()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["floors"] = {"batched_throughput_ratio_min": 4.0, "met": result["throughput"]["ratio"] >= 4.0}
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({hashlib.sha256(args.out.read_bytes()).hexdigest()[:12]})")
    return result


if __name__ == "__main__":
    main()
