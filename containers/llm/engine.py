"""Iteration-level (continuous) batching for a causal LM, with results that do not depend on the batch.

How a request runs: it waits for a free slot (`rows` slots, 16 by default); its prompt is prefilled alone, as a
batch of one, into that slot's own K/V buffers; from then on it takes one token per decode step, and every decode
step runs all `rows` slots as one forward pass, busy or not. A request that arrives while others generate joins at
the next step, and a finished one leaves at once, so a long generation never holds a short one hostage.

Guarantees:
- **Batch invariance.** Every tensor a request's tokens pass through has a shape fixed by the request alone
  (prefill: its prompt length) or by the engine (decode: `rows` x 1 tokens), and attention is computed slot by slot
  over that slot's own keys. CPU GEMM picks its kernel, and so its order of additions, by shape: measured on this
  project's 2-core CI machine, `linear` rows of a 1-, 2-, 3-, 5-7- or 9-11-row batch differ in the last bits from
  the same rows in a 16-row batch (tests/integration/test_llm_engine.py checks the consequence). With fixed shapes
  the bits of a request's logits are a function of the request alone, and the thread count does not change them
  either (measured for 1 and 2 threads, same test): greedy decoding then gives byte-identical text.
- **Bounded memory.** K/V buffers grow by doubling up to `max_context` tokens a slot: at most
  `rows * max_context * kv_bytes_per_token` (reported by `memory_bound_bytes`).
- Every submitted request ends: its future gets a `Generation`, or the exception that stopped it (a failed forward
  pass fails the requests in flight, never the engine).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: Slots decoded together in one step (the fixed batch shape). 16 is the smallest power of two at which this
#: CPU's GEMM rows are stable, and the concurrency the benchmark measures.
DEFAULT_ROWS = 16

_local = threading.local()


@dataclass(frozen=True)
class Generation:
    """One finished request: its token ids (without the stop token), its text, and timings in seconds."""

    tokens: tuple[int, ...]
    text: str
    prompt_tokens: int
    first_token_s: float
    total_s: float
    #: "stop" (the model or the grammar ended it) or "length" (`max_new_tokens` reached).
    finish: str
    #: sha256 of the logits every token was chosen from (their bytes, in order): equal digests mean the request's
    #: computation was bit-identical, which is stronger than equal text.
    logits_sha256: str = ""


@dataclass
class GenRequest:
    """A request to the engine: prompt token ids, a cap on new tokens and, optionally, a grammar matcher
    (`xgrammar.GrammarMatcher`) that masks every step's logits, and a callback that gets each new piece of text."""

    prompt_ids: Sequence[int]
    max_new_tokens: int
    matcher: Any = None
    on_piece: Callable[[str], None] | None = None
    future: Future[Generation] = field(default_factory=Future)
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    logits_hash: Any = field(default_factory=lambda: hashlib.sha256())
    submitted: float = field(default_factory=time.perf_counter)
    first_token: float = 0.0


class SlotCache:
    """K/V per layer per slot, each slot's own tensor `[kv_heads, capacity, head_dim]`, growing by doubling.

    The model's attention layers call `update(keys, values, layer)` (transformers' cache interface) with the new
    keys of this forward pass: a prefill's `[1, kv_heads, P, head_dim]` for `prefill_row`, or a decode step's
    `[rows, kv_heads, 1, head_dim]`, of which the `active` rows are kept."""

    def __init__(self, layers: int, rows: int, max_context: int) -> None:
        self.layers = layers
        self.rows = rows
        self.max_context = max_context
        self.keys: list[list[Any]] = [[None] * rows for _ in range(layers)]
        self.values: list[list[Any]] = [[None] * rows for _ in range(layers)]
        self.lengths = [0] * rows
        self.prefill_row: int | None = None
        self.active: list[int] = []

    def _store(self, layer: int, row: int, keys: Any, values: Any, at: int) -> None:
        import torch

        n = keys.shape[1]
        buf_k, buf_v = self.keys[layer][row], self.values[layer][row]
        if buf_k is None or buf_k.shape[1] < at + n:
            capacity = min(self.max_context, max(64, 2 * (at + n)))
            if capacity < at + n:
                raise RuntimeError(f"slot {row} is over the context limit of {self.max_context} tokens")
            grown_k = torch.empty((keys.shape[0], capacity, keys.shape[2]), dtype=keys.dtype, device=keys.device)
            grown_v = torch.empty_like(grown_k)
            if buf_k is not None and at:
                grown_k[:, :at] = buf_k[:, :at]
                grown_v[:, :at] = buf_v[:, :at]
            self.keys[layer][row], self.values[layer][row] = grown_k, grown_v
            buf_k, buf_v = grown_k, grown_v
        buf_k[:, at : at + n] = keys
        buf_v[:, at : at + n] = values

    def update(self, keys: Any, values: Any, layer_idx: int, *_: Any, **__: Any) -> tuple[Any, Any]:
        if self.prefill_row is not None:
            self._store(layer_idx, self.prefill_row, keys[0], values[0], 0)
        else:
            for row in self.active:
                self._store(layer_idx, row, keys[row], values[row], self.lengths[row])
        return keys, values

    def release(self, row: int) -> None:
        """Frees a slot's buffers."""
        for layer in range(self.layers):
            self.keys[layer][row] = None
            self.values[layer][row] = None
        self.lengths[row] = 0


def slot_attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None, **_: Any
) -> tuple[Any, None]:
    """Attention for `SlotCache` (registered with transformers as "infera_slots"): a prefill attends causally over
    its own prompt; a decode step attends row by row over each active slot's own keys. Shapes in: query
    `[rows, heads, q_len, head_dim]`; out: `[rows, q_len, heads, head_dim]`, as transformers' attention functions."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    cache: SlotCache | None = getattr(_local, "cache", None)
    if cache is None or cache.prefill_row is not None:
        out = sdpa(query, key, value, is_causal=query.shape[2] > 1, scale=scaling, enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None
    layer = module.layer_idx
    out = torch.zeros_like(query)
    for row in cache.active:
        n = cache.lengths[row] + 1
        k = cache.keys[layer][row][:, :n].unsqueeze(0)
        v = cache.values[layer][row][:, :n].unsqueeze(0)
        out[row] = sdpa(query[row : row + 1], k, v, scale=scaling, enable_gqa=True)[0]
    return out.transpose(1, 2).contiguous(), None


def register_slot_attention() -> str:
    """Registers `slot_attention` with transformers once; returns its name for `set_attn_implementation`."""
    from transformers import AttentionInterface

    AttentionInterface.register("infera_slots", slot_attention)
    return "infera_slots"


@dataclass
class EngineStats:
    """Decode steps run, tokens made, the most slots busy at once, and requests finished."""

    steps: int = 0
    tokens: int = 0
    busiest: int = 0
    finished: int = 0
    busy_rows: int = 0

    @property
    def mean_busy(self) -> float:
        return self.busy_rows / self.steps if self.steps else 0.0


class Engine:
    """Runs `GenRequest`s on `model` (a transformers causal LM whose attention goes through `slot_attention`) on
    its own thread: `submit` from any thread, `close` to finish what was submitted and stop.

    `decode(tokens) -> str` turns token ids into text; `stop_ids` end a generation."""

    def __init__(
        self,
        model: Any,
        *,
        decode: Callable[[list[int]], str],
        stop_ids: Sequence[int],
        pad_id: int,
        rows: int = DEFAULT_ROWS,
        max_context: int = 2048,
        device: str = "cpu",
    ) -> None:
        if rows < 1:
            raise ValueError("rows must be at least 1")
        self.model = model
        self.rows = rows
        self.max_context = max_context
        self.device = device
        self._decode = decode
        self._stop = frozenset(stop_ids)
        self._pad = pad_id
        layers = int(model.config.num_hidden_layers)
        self.cache = SlotCache(layers, rows, max_context)
        self._slots: list[GenRequest | None] = [None] * rows
        self._queue: deque[GenRequest] = deque()
        self._lock = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.stats = EngineStats()

    @property
    def memory_bound_bytes(self) -> int:
        """The most K/V memory the slots can hold: rows x max_context x bytes per token (all layers, K and V)."""
        config = self.model.config
        heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        per_token = 2 * int(config.num_hidden_layers) * heads * head_dim * int(self.model.dtype.itemsize)
        return self.rows * self.max_context * per_token

    @property
    def pending(self) -> int:
        """Requests waiting for a slot plus those generating."""
        with self._lock:
            return len(self._queue) + sum(s is not None for s in self._slots)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llm-engine", daemon=True)
            self._thread.start()

    def submit(self, request: GenRequest) -> Future[Generation]:
        """Queues a request; raises RuntimeError once the engine is closing."""
        if len(request.prompt_ids) + request.max_new_tokens > self.max_context:
            raise ValueError(
                f"prompt of {len(request.prompt_ids)} tokens + {request.max_new_tokens} new tokens is over the "
                f"context limit of {self.max_context}"
            )
        with self._lock:
            if self._closing:
                raise RuntimeError("the engine is shutting down")
            request.submitted = time.perf_counter()
            self._queue.append(request)
            self._lock.notify()
        return request.future

    def close(self, timeout_s: float = 60.0) -> None:
        """Stops taking requests, finishes those submitted (up to `timeout_s`), then stops the thread."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- the engine thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._lock:
                    while not self._queue and not any(self._slots) and not self._closing:
                        self._lock.wait()
                    if self._closing and not self._queue and not any(self._slots):
                        return
                    admitted = []
                    for row in range(self.rows):
                        while self._slots[row] is None and self._queue:
                            waiting = self._queue.popleft()
                            if not waiting.future.cancelled():  # its caller left while it waited
                                self._slots[row] = waiting
                                admitted.append(row)
                for row in admitted:
                    self._guard(self._prefill, row)
                if any(self._slots):
                    self._guard(self._step, None)

    def _guard(self, work: Callable[[int | None], None], row: int | None) -> None:
        try:
            work(row)
        except Exception as exc:  # a failed forward pass fails the requests it carried, not the engine
            log.exception("generation failed")
            rows = [row] if row is not None else [r for r, s in enumerate(self._slots) if s is not None]
            for r in rows:
                self._finish(r, error=exc)
        finally:
            self.cache.prefill_row = None
            _local.cache = None

    def _forward(self, input_ids: Any, position_ids: Any) -> Any:
        import torch

        _local.cache = self.cache
        dummy_mask = torch.zeros((input_ids.shape[0], 1, 1, 1), device=self.device)  # 4-D: taken as it is
        out = self.model(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=dummy_mask,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1]

    def _prefill(self, row: int | None) -> None:
        import torch

        assert row is not None
        request = self._slots[row]
        assert request is not None
        prompt = torch.tensor([list(request.prompt_ids)], device=self.device)
        self.cache.prefill_row = row
        logits = self._forward(prompt, torch.arange(prompt.shape[1], device=self.device).unsqueeze(0))
        self.cache.prefill_row = None
        self.cache.lengths[row] = prompt.shape[1]
        request.first_token = time.perf_counter()
        self._take(row, logits[0].float().cpu())

    def _step(self, _: int | None) -> None:
        import torch

        active = [r for r, s in enumerate(self._slots) if s is not None]
        self.cache.active = active
        input_ids = torch.full((self.rows, 1), self._pad, dtype=torch.long)
        positions = torch.zeros((self.rows, 1), dtype=torch.long)
        for r in active:
            request = self._slots[r]
            assert request is not None
            input_ids[r, 0] = request.tokens[-1]
            positions[r, 0] = self.cache.lengths[r]
        logits = self._forward(input_ids.to(self.device), positions.to(self.device))
        self.stats.steps += 1
        self.stats.busy_rows += len(active)
        self.stats.busiest = max(self.stats.busiest, len(active))
        on_host = logits.float().cpu()  # one copy a step: token choice and grammar masks run on the CPU
        for r in active:
            self.cache.lengths[r] += 1
            try:
                self._take(r, on_host[r])
            except Exception as exc:  # one request's grammar or callback fails that request, not its neighbours
                log.exception("generation of slot %d failed", r)
                self._finish(r, error=exc)

    def _take(self, row: int, logits: Any) -> None:
        """Chooses the next token of slot `row` greedily (masked by its grammar) from its fp32 logits on the CPU,
        and ends the request when due."""
        request = self._slots[row]
        assert request is not None
        if request.future.cancelled():  # its caller left: free the slot
            self._finish(row)
            return
        request.logits_hash.update(logits.numpy().tobytes())
        if request.matcher is not None:
            token = _masked_argmax(request.matcher, logits)
            if not request.matcher.accept_token(token):
                raise RuntimeError(f"the grammar refused token {token} it allowed")
            done = request.matcher.is_terminated()
        else:
            token = int(logits.argmax())
            done = token in self._stop
        self.stats.tokens += 1
        if token not in self._stop:
            request.tokens.append(token)
            self._emit(request)
        if done or token in self._stop:
            self._finish(row, finish="stop")
        elif len(request.tokens) >= request.max_new_tokens:
            self._finish(row, finish="length")

    def _emit(self, request: GenRequest) -> None:
        if request.on_piece is None:
            return
        text = self._decode(request.tokens)
        if text.startswith(request.sent) and not text.endswith("\ufffd"):  # hold back half a UTF-8 character
            piece, request.sent = text[len(request.sent) :], text
            if piece:
                self._hand(request, piece)

    @staticmethod
    def _hand(request: GenRequest, piece: str) -> None:
        """Gives `piece` to the request's callback; a callback that raises gets nothing more (the answer still
        completes)."""
        if request.on_piece is None:
            return
        try:
            request.on_piece(piece)
        except Exception:
            log.warning("a stream callback failed; the answer completes without streaming", exc_info=True)
            request.on_piece = None

    def _finish(self, row: int, *, finish: str = "stop", error: BaseException | None = None) -> None:
        request = self._slots[row]
        self._slots[row] = None
        self.cache.release(row)
        if request is None or request.future.done():
            return
        outcome: Generation | BaseException
        try:  # built before the future is claimed: whatever fails here still ends the request
            outcome = error if error is not None else self._result(request, finish)
        except Exception as exc:
            log.exception("finishing a generation failed")
            outcome = exc
        if not request.future.set_running_or_notify_cancel():
            return  # its caller cancelled it
        self.stats.finished += 1
        if isinstance(outcome, BaseException):
            request.future.set_exception(outcome)
        else:
            request.future.set_result(outcome)

    def _result(self, request: GenRequest, finish: str) -> Generation:
        text = self._decode(request.tokens)
        if text != request.sent and text.startswith(request.sent):
            self._hand(request, text[len(request.sent) :])
        now = time.perf_counter()
        return Generation(
            tokens=tuple(request.tokens),
            text=text,
            prompt_tokens=len(request.prompt_ids),
            first_token_s=(request.first_token or now) - request.submitted,
            total_s=now - request.submitted,
            finish=finish,
            logits_sha256=request.logits_hash.hexdigest(),
        )


def _masked_argmax(matcher: Any, logits: Any) -> int:
    """The highest logit among the tokens `matcher` allows next (xgrammar's bitmask, applied on a CPU copy: its CPU
    kernel needs no triton)."""
    import xgrammar as xgr

    bitmask = xgr.allocate_token_bitmask(1, int(logits.shape[-1]))
    matcher.fill_next_token_bitmask(bitmask)
    masked = logits.unsqueeze(0).clone()
    xgr.apply_token_bitmask_inplace(masked, bitmask)
    return int(masked[0].argmax())
