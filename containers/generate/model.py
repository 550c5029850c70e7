"""`(string prompt, uint32 maxNewTokens)` → `(string text)` with any causal LM, greedy decoding.

Greedy decoding makes the answer a function of the prompt, so several nodes serving one request agree.
`maxNewTokens` must be between 1 and the server's cap (`--max-new-tokens`), and the prompt's tokens plus
`maxNewTokens` must fit the model's context (`max_position_embeddings`): a longer prompt is refused, never cut.
Prompts are batched with left padding and grouped by length. `stream` yields the same text piece by piece, for
off-chain callers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

from containers.runtime.batching import length_buckets
from containers.runtime.model import InputError, ModelError, check_text, pick_device, torch_dtype

MAX_PROMPT_CHARS = 8192


class GenerateModel:
    """Text generation with a local causal LM: `(string prompt, uint32 max_new_tokens)` -> `(string text)`, greedy."""

    input_types: tuple[str, ...] = ("string", "uint32")
    output_types: tuple[str, ...] = ("string",)
    input_names: tuple[str, ...] = ("prompt", "max_new_tokens")
    output_names: tuple[str, ...] = ("text",)

    def __init__(
        self,
        model_path: str,
        name: str | None = None,
        *,
        max_new_tokens: int = 64,
        device: str | None = None,
        dtype: str | None = None,
        token_budget: int = 8192,
    ) -> None:
        self.model_path = model_path
        self.name = name or f"generate/{model_path.rstrip('/').rsplit('/', 1)[-1]}"
        self.max_new_tokens = max_new_tokens
        self._device = pick_device(device)
        self.dtype = torch_dtype(self._device, dtype)
        self.token_budget = token_budget
        self._tokenizer: Any = None
        self._model: Any = None
        self._max_positions = 0
        self._counter: Any = None  # a copy of the tokenizer for `check`, which runs off the model's thread

    @property
    def device(self) -> str:
        return self._device

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer = tokenizer
        model: Any = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
        self._model = model.to(self._device).eval()
        config = self._model.config
        self._max_positions = int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0))
        self._counter = copy.deepcopy(tokenizer)
        self._counter.model_max_length = 10**9  # counted, never cut: no "longer than" warnings
        self.predict([("warm up", 1)])

    def check(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        prompt = check_text(args[0], field="prompt", max_chars=MAX_PROMPT_CHARS)
        wanted = args[1]
        if isinstance(wanted, bool) or not isinstance(wanted, int) or not 1 <= wanted <= self.max_new_tokens:
            raise InputError(f"max_new_tokens must be an integer from 1 to {self.max_new_tokens}, got {wanted!r}")
        if self._counter is None:
            raise ModelError("the model is not loaded")
        tokens = len(self._counter(prompt)["input_ids"])
        if self._max_positions and tokens + wanted > self._max_positions:
            raise InputError(
                f"prompt is {tokens} tokens and the answer may take {wanted}: over the model's context of "
                f"{self._max_positions} tokens; shorten the prompt or lower max_new_tokens (nothing is cut)"
            )
        return prompt, wanted

    def _prompt_ids(self, prompts: Sequence[str], wanted: Sequence[int]) -> list[list[int]]:
        """The prompts' token ids, whole. Raises `ModelError` if one with its `wanted` new tokens would not fit the
        context (`check` refuses those first)."""
        ids: list[list[int]] = self._tokenizer(list(prompts))["input_ids"]
        for x, new in zip(ids, wanted, strict=True):
            if not self._fits([len(x)], [new]):
                raise ModelError(f"a prompt of {len(x)} tokens and {new} new ones are over the context")
        return ids

    def _fits(self, lengths: Sequence[int], wanted: Sequence[int]) -> bool:
        """Whether a left-padded batch of prompts this long, generating the most wanted, stays within the context."""
        return not self._max_positions or max(lengths) + max(wanted) <= self._max_positions

    def _groups(self, ids: list[list[int]], wanted: list[int]) -> Iterator[list[int]]:
        """Length buckets of the inputs; a bucket whose longest prompt plus its most new tokens would pass the
        context (each input fits alone) runs one input at a time."""
        for group in length_buckets([len(x) for x in ids], token_budget=self.token_budget, max_items=len(ids)):
            if self._fits([len(ids[i]) for i in group], [wanted[i] for i in group]):
                yield group
            else:
                yield from ([i] for i in group)

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        import torch

        prompts = [p for p, _ in inputs]
        wanted = [int(n) for _, n in inputs]
        ids = self._prompt_ids(prompts, wanted)
        texts = [""] * len(inputs)
        for group in self._groups(ids, wanted):
            batch = self._tokenizer.pad({"input_ids": [ids[i] for i in group]}, return_tensors="pt").to(self._device)
            new = max(wanted[i] for i in group)
            with torch.inference_mode():
                out = self._model.generate(
                    **batch, max_new_tokens=new, do_sample=False, pad_token_id=self._tokenizer.pad_token_id
                )
            prompt_len = batch["input_ids"].shape[1]
            for row, i in enumerate(group):
                texts[i] = self._decode(out[row, prompt_len:].tolist()[: wanted[i]])
        return [(t,) for t in texts]

    def _decode(self, tokens: list[int]) -> str:
        eos = self._tokenizer.eos_token_id
        if eos in tokens:
            tokens = tokens[: tokens.index(eos)]
        return str(self._tokenizer.decode(tokens, skip_special_tokens=True))

    def stream(self, args: tuple[Any, ...]) -> Iterator[str]:
        """Greedy decoding one token at a time with the KV cache; yields each new piece of text."""
        import torch

        prompt, wanted = args
        ids = torch.tensor([self._prompt_ids([prompt], [wanted])[0]], device=self._device)
        past: Any = None
        step_input = ids
        attention = torch.ones_like(ids)
        tokens: list[int] = []
        sent = ""
        with torch.inference_mode():
            for _ in range(wanted):
                out = self._model(input_ids=step_input, attention_mask=attention, past_key_values=past, use_cache=True)
                past = out.past_key_values
                next_id = int(out.logits[0, -1].argmax())
                if next_id == self._tokenizer.eos_token_id:
                    break
                tokens.append(next_id)
                text = self._decode(tokens)
                if text.startswith(sent) and not text.endswith("\ufffd"):  # hold back half a UTF-8 character
                    piece, sent = text[len(sent) :], text
                    if piece:
                        yield piece
                step_input = torch.tensor([[next_id]], device=self._device)
                attention = torch.cat([attention, torch.ones((1, 1), dtype=attention.dtype, device=self._device)], 1)
        final = self._decode(tokens)
        if final != sent and final.startswith(sent):
            yield final[len(sent) :]

    def info(self) -> dict[str, Any]:
        return {
            "kind": "causal-lm",
            "decoding": "greedy",
            "max_new_tokens": self.max_new_tokens,
            "max_prompt_chars": MAX_PROMPT_CHARS,
            "input_limits": {
                "max_context_tokens": self._max_positions or None,
                "counts": "prompt tokens + maxNewTokens",
                "over_limit": "refused (400): nothing is cut",
                "languages": "the model's own (not checked)",
                "refuses": ["no visible characters (whitespace, control characters)", "over the context"],
            },
            "dtype": str(self.dtype).removeprefix("torch."),
        }
