"""How often honest runs of each model deliver identical bytes, raw and in candidate consensus forms.

    python -m bench.consensus_forms [--texts 320] [--prompts 40] [--new-tokens 24] [--models classify,embed,llm]

k-of-n consensus pays the nodes whose delivered output bytes are identical, so a model's consensus form must make
honest runs agree on other hardware, precisions and thread counts. For each model (the packaged MiniLM zero-shot
classifier and embeddings, the packaged SmolLM2-135M LLM), each configuration runs in its own process (thread
counts and dtypes cannot be switched cleanly inside one): the baseline is fp32 on 1 torch thread, in batches of 32;
against it, fp32 on 2 threads, fp32 one input at a time (other batch neighbours and padding), bf16 weights (the
container's `--dtype bfloat16`) and, when CUDA is available, GPU fp32 and fp16 (not run where there is none). Per
configuration and form: the share of inputs whose ABI-encoded output bytes equal the baseline's. Inputs are made
here, deterministically: texts of 1 to ~150 words from word lists and templates, punctuation, a few non-English and
edge cases; LLM chat prompts (free text, and choice and integer answers). Prints a table per model and writes
bench/results/consensus_forms.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from eth_abi.abi import encode

from containers.classify.model import canonical_score
from containers.embed.model import canonical_embedding

RESULTS = Path(__file__).parent / "results"
OUTPUT_TYPES = {"classify": ["string", "uint256"], "embed": ["bytes", "uint256"], "llm": ["string", "int256"]}
#: Candidate forms per model: name -> the output tuple's canonical form. "bytes" is the output as it is.
CLASSIFY_FORMS: dict[str, int | None] = {
    "bytes": None,
    "label, score 0.001": 1_000,
    "label, score 0.01": 10_000,
    "label, score 0.1": 100_000,
    "label only (score 0)": 0,
}
EMBED_FORMS: dict[str, int | None] = {
    "bytes": None,
    "fixed scale 1/128": 7_812_500_000,
    "2 decimals": 10**10,
    "0.02": 2 * 10**10,
    "0.05": 5 * 10**10,
    "1 decimal": 10**11,
    "sign bits": 0,
}

SUBJECTS = [
    "the hotel",
    "this phone",
    "our waiter",
    "the new update",
    "my order",
    "the film",
    "customer support",
    "the battery",
    "this book",
    "the delivery",
    "the concert",
    "their app",
    "the coffee",
    "the flight",
]
VERBS = ["was", "is", "seemed", "felt", "turned out", "has been", "looked"]
ADJECTIVES = [
    "wonderful",
    "terrible",
    "okay",
    "surprisingly good",
    "a bit slow",
    "awful",
    "fantastic",
    "mediocre",
    "broken",
    "perfect",
    "disappointing",
    "fine I guess",
    "not bad",
    "not good",
    "excellent",
    "confusing",
]
TAILS = [
    "",
    " and I would buy it again",
    " but the price is too high",
    " so I asked for a refund",
    " and the staff were friendly",
    ", never again",
    " - five stars",
    " although shipping took weeks",
    " and it broke after two days",
    " which made my whole week",
]
ENDINGS = [".", "!", "!!!", "?", "...", " :)", " :(", "", " 👍", " 😡"]
FOREIGN = [
    "C'est vraiment génial, je l'adore !",
    "Das war eine schreckliche Erfahrung.",
    "¡Qué servicio tan malo!",
    "这家餐厅的菜很好吃。",
    "このアプリは使いにくいです。",
    "Отличный товар, рекомендую.",
    "الخدمة كانت سيئة جدا",
    "Il film era noioso e troppo lungo.",
    "Heel goed product, snel geleverd.",
    "Çok güzel bir otel.",
]
EDGE = [
    "a",
    "?",
    "ok",
    "12345",
    "NOT GOOD AT ALL",
    "good good good good good good good good",
    "meh",
    "https://example.com/review?id=42",
    "def f(x): return x * 2",
    "   spaced   out   text   ",
    "5/10",
    "I don't know.",
    "Terrible!!! Wonderful!!! Terrible!!!",
    "The end.",
    "no",
    "yes",
    "love it or hate it?",
]
FILLER = ["we", "stayed", "three", "nights", "and", "the", "room", "was", "clean", "but", "small", "breakfast"]
FILLER += ["changed", "every", "day", "staff", "tried", "hard", "although", "lift", "often", "broken", "street"]
FILLER += ["outside", "loud", "until", "late", "at", "night"]
TOPICS = [
    "how tides work",
    "why the sky is blue",
    "the printing press",
    "how bread rises",
    "why cats purr",
    "how a bicycle stays upright",
    "what a blockchain oracle does",
    "solar panels",
    "the moon landing",
    "how vaccines work",
    "the water cycle",
    "how a compiler works",
    "why leaves change colour",
    "how bees make honey",
    "the first computers",
    "how rainbows form",
]
ASKS = [
    "Explain {} in one sentence.",
    "Write a short title about {}.",
    "Give one fact about {}.",
    "Describe {} to a child.",
]


def make_texts(n: int, seed: int = 7) -> list[str]:
    """`n` varied texts, the same on every run: templated reviews of 1 to ~150 words, foreign and edge cases."""
    rng = random.Random(seed)
    fixed = FOREIGN + EDGE
    texts: list[str] = []
    for i in range(n - len(fixed)):
        base = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADJECTIVES)}{rng.choice(TAILS)}"
        extra = rng.choice([0, 0, 0, 3, 10, 25, 60, 140]) if i % 3 else 0
        words = [rng.choice(FILLER) for _ in range(extra)]
        text = (base[0].upper() + base[1:] + " " + " ".join(words)).strip() + rng.choice(ENDINGS)
        texts.append(text.upper() if i % 29 == 0 else text)
    return texts + fixed


def make_prompts(n: int) -> list[dict[str, Any]]:
    """`n` LLM requests (off-chain field names): free text from topics and asks, every fifth a choice or integer."""
    prompts: list[dict[str, Any]] = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        if i % 5 == 3:
            prompts.append({"messages": [f"Is this about science: {topic}?"], "answer": 1, "allowed": ["yes", "no"]})
        elif i % 5 == 4:
            prompts.append({"messages": [f"Rate how hard {topic} is, 1 to 10."], "answer": 2, "min": 1, "max": 10})
        else:
            prompts.append({"messages": [ASKS[(i // len(TOPICS)) % len(ASKS)].format(topic)]})
    return prompts


# ------------------------------------------------------------------------------------------------ one configuration


def run_config(model: str, threads: int, dtype: str, device: str, batch: int, args: argparse.Namespace) -> Any:
    """In this (fresh) process: load `model` on `threads` torch threads in `dtype`, run every input, return the
    outputs as JSON-able lists and the timings."""
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    if model == "llm":
        from containers.llm.model import LLMModel

        llm = LLMModel(max_new_tokens=args.new_tokens, max_context=1024, device=device, dtype=dtype)
        llm.load()
        loaded = time.perf_counter()
        requests = [
            llm.check(tuple({**llm.input_defaults, "max_new_tokens": args.new_tokens, **p}[k] for k in llm.input_names))
            for p in make_prompts(args.prompts)
        ]
        outputs = [list(o) for o in llm.predict(requests)]
        llm.close()
    else:
        from containers.classify.model import ZeroShotClassifier
        from containers.embed.model import EmbedModel

        m = (
            ZeroShotClassifier(device=device, dtype=dtype)
            if model == "classify"
            else EmbedModel(device=device, dtype=dtype)
        )
        m.load()
        loaded = time.perf_counter()
        inputs = [(t,) for t in make_texts(args.texts)]
        outputs = []
        for start in range(0, len(inputs), batch):
            for first, second in m.predict(inputs[start : start + batch]):
                outputs.append([first.hex() if isinstance(first, bytes) else first, second])
    return {"outputs": outputs, "load_s": round(loaded - started, 1), "run_s": round(time.perf_counter() - loaded, 1)}


def forms(model: str, output: list[Any]) -> dict[str, bytes]:
    """The ABI bytes of one output in each candidate form of `model`."""
    types = OUTPUT_TYPES[model]
    if model == "llm":
        return {"bytes": encode(types, output)}
    if model == "classify":
        label, score = output
        return {
            name: encode(types, [label, score if step is None else canonical_score(score, step)])
            for name, step in CLASSIFY_FORMS.items()
        }
    data, scale = bytes.fromhex(output[0]), output[1]
    return {
        name: encode(types, [data, scale] if step is None else list(canonical_embedding(data, scale, step)))
        for name, step in EMBED_FORMS.items()
    }


def configurations(model: str, cuda: bool) -> list[tuple[str, int, str, str, int]]:
    """(name, threads, dtype, device, batch) for `model`; the first is the baseline."""
    batch = 32
    rows = [
        ("fp32, 1 thread (baseline)", 1, "float32", "cpu", batch),
        ("fp32, 2 threads", 2, "float32", "cpu", batch),
    ]
    if model != "llm":  # the LLM engine's batch invariance is its own test (tests/integration/test_llm_server.py)
        rows.append(("fp32, 1 thread, one at a time", 1, "float32", "cpu", 1))
    rows.append(("bf16 weights, 2 threads", 2, "bfloat16", "cpu", batch))
    if cuda:
        rows += [("GPU fp32", 1, "float32", "cuda", batch), ("GPU fp16", 1, "float16", "cuda", batch)]
    return rows


def agreement(model: str, baseline: list[Any], other: list[Any]) -> dict[str, Any]:
    """Per form, the share of inputs whose bytes equal the baseline's; for embed also the share of single values
    that agree in the 2-decimal form (a vector agrees only when all its values do)."""
    shares: dict[str, Any] = {}
    pairs = [(forms(model, a), forms(model, b)) for a, b in zip(baseline, other, strict=True)]
    for name in pairs[0][0]:
        shares[name] = round(sum(a[name] == b[name] for a, b in pairs) / len(pairs), 4)
    if model == "embed":
        equal = total = 0
        for a, b in zip(baseline, other, strict=True):
            x = canonical_embedding(bytes.fromhex(a[0]), a[1], 10**10)[0]
            y = canonical_embedding(bytes.fromhex(b[0]), b[1], 10**10)[0]
            equal += sum(p == q for p, q in zip(x, y, strict=True))
            total += len(x)
        shares["values agreeing, 2 decimals"] = round(equal / total, 5)
    if model == "llm":  # every fifth prompt from the fourth on is a choice or integer answer (`make_prompts`)
        for kind, constrained in (("free text", False), ("choice, integer", True)):
            chosen = [pair for i, pair in enumerate(pairs) if (i % 5 >= 3) == constrained]
            shares[kind] = round(sum(a["bytes"] == b["bytes"] for a, b in chosen) / len(chosen), 4)
    if model == "classify":
        shares["labels agreeing"] = round(
            sum(a[0] == b[0] for a, b in zip(baseline, other, strict=True)) / len(pairs), 4
        )
    return shares


def fidelity(baseline: list[Any]) -> dict[str, float]:
    """Per embed form, the mean cosine of the canonical vector to the baseline's raw int8 vector (itself ≥ 0.999 to
    the float embedding): what a form costs in meaning."""

    def cosine(a: bytes, b: bytes) -> float:
        x, y = [v - 256 if v > 127 else v for v in a], [v - 256 if v > 127 else v for v in b]
        dot, nx, ny = sum(p * q for p, q in zip(x, y, strict=True)), sum(p * p for p in x), sum(q * q for q in y)
        return dot / (nx * ny) ** 0.5 if nx and ny else 0.0

    out = {}
    for name, step in EMBED_FORMS.items():
        if step is None:
            continue
        total = 0.0
        for data_hex, scale in baseline:
            data = bytes.fromhex(data_hex)
            total += cosine(data, canonical_embedding(data, scale, step)[0])
        out[name] = round(total / len(baseline), 4)
    return out


def spawn(model: str, config: tuple[str, int, str, str, int], args: argparse.Namespace) -> Any:
    _, threads, dtype, device, batch = config
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "outputs.json"
        command = [sys.executable, "-m", "bench.consensus_forms", "--worker", model, "--threads", str(threads)]
        command += ["--dtype", dtype, "--device", device, "--batch", str(batch), "--worker-out", str(out)]
        command += ["--texts", str(args.texts), "--prompts", str(args.prompts), "--new-tokens", str(args.new_tokens)]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        return json.loads(out.read_text())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.consensus_forms", description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=320, help="classify and embed inputs")
    parser.add_argument("--prompts", type=int, default=40, help="LLM requests")
    parser.add_argument("--new-tokens", type=int, default=24, help="LLM free-text answer cap")
    parser.add_argument("--models", default="classify,embed,llm")
    parser.add_argument("--out", type=Path, default=RESULTS / "consensus_forms.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = run_config(args.worker, args.threads, args.dtype, args.device, args.batch, args)
        args.worker_out.write_text(json.dumps(result))
        return dict(result)

    import torch

    from containers.runtime.model import cpu_has_amx

    cuda = torch.cuda.is_available()
    started = time.perf_counter()
    record: dict[str, Any] = {
        "command": ("python -m bench.consensus_forms " + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
        "date": time.strftime("%Y-%m-%d"),
        "cpu": f"{cpu_name()}, {os.cpu_count()} cores, AMX: {'yes' if cpu_has_amx() else 'no'}",
        "cuda": torch.cuda.get_device_name(0) if cuda else "none: the GPU rows were not run",
        "torch": torch.__version__,
        "sizes": {"texts": args.texts, "prompts": args.prompts, "new_tokens": args.new_tokens},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "models": {},
    }
    for model in args.models.split(","):
        configs = configurations(model, cuda)
        runs = {c[0]: spawn(model, c, args) for c in configs}
        baseline = runs[configs[0][0]]["outputs"]
        record["models"][model] = {
            name: {"load_s": r["load_s"], "run_s": r["run_s"], "agreement": agreement(model, baseline, r["outputs"])}
            for name, r in list(runs.items())[1:]
        }
        if model == "embed":
            record["models"]["embed_cosine_to_raw"] = fidelity(baseline)
        print(f"\n{model}: share of inputs agreeing with {configs[0][0]}")
        for name, r in record["models"][model].items():
            figures = ", ".join(f"{k} {v}" for k, v in r["agreement"].items())
            print(f"  {name:<32} {figures}  (run {r['run_s']} s)")
        if model == "embed":
            print(f"  mean cosine of each form to the raw int8 vector: {record['models']['embed_cosine_to_raw']}")
    record["seconds"] = round(time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"\n{record['cpu']}; CUDA: {record['cuda']}; {record['seconds']} s; written to {args.out}")
    return record


if __name__ == "__main__":
    main()
