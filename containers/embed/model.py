"""`(string text)` → `(bytes embedding, uint256 scaleE12)`: a unit-length sentence embedding quantized to int8.

On-chain, `embedding[i]` is a two's-complement int8 and the value is `int8(embedding[i]) * scaleE12 / 1e12`
(symmetric quantization, `scale = max|x| / 127`). 384 bytes for MiniLM instead of 12 KB of ABI `int256[]`.

Consensus form ("rounded"): the same `(bytes, uint256)`, re-quantized to a fixed scale, `consensus_step_e12` (default
10^10: values rounded to 2 decimals, int8 from -100 to 100, `scaleE12` = 10^10), with integer arithmetic only; step
0 gives sign bits (each value ±1, `scaleE12` = 10^12 / sqrt(dimensions), floored). The raw scale follows the
vector's largest value to 12 digits, so it differs between honest runs almost always; the fixed scale does not.
A rounded value still flips where the float sits near a rounding boundary, and a vector agrees only when all its
values do: the measured rates are in BENCHMARKS.md ("Consensus forms").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from containers.embed.encoder import SentenceEncoder, packaged_minilm_path
from containers.runtime.model import ModelError, check_text, pick_device
from containers.runtime.text import TextGate

SCALE_DIGITS = 12
#: Consensus answers' fixed scale, in units of 1e-12: 10^10 rounds each value to 2 decimals (0: sign bits).
DEFAULT_CONSENSUS_STEP_E12 = 10**10
MAX_TEXT_CHARS = 4096
#: Tokens MiniLM reads, its [CLS] and [SEP] included (`max_seq_length` of all-MiniLM-L6-v2). Longer: refused.
MAX_TOKENS = 256
#: What the packaged MiniLM reads: its vocabulary and training data are English.
DEFAULT_LANGUAGES: tuple[str, ...] = ("en",)


def quantize(vector: Sequence[float]) -> tuple[bytes, int]:
    """Symmetric int8 quantization: (the int8 values as bytes, the scale in units of 1e-12)."""
    peak = max((abs(x) for x in vector), default=0.0)
    scale = peak / 127 if peak > 0 else 1.0
    values = [max(-127, min(127, round(x / scale))) for x in vector]
    return bytes(v & 0xFF for v in values), round(scale * 10**SCALE_DIGITS)


def quantize_rows(vectors: Any) -> list[tuple[bytes, int]]:
    """`quantize` for a whole float tensor at once (one row per text): same results, no Python loop per value."""
    import torch

    vectors = vectors.double()  # the scale is published to 1e-12: compute it as `quantize` does, in float64
    peak = vectors.abs().amax(dim=1, keepdim=True)
    scale = torch.where(peak > 0, peak / 127, torch.ones_like(peak))
    values = torch.round(vectors / scale).clamp(-127, 127).to(torch.int8)
    return [
        (row.numpy().tobytes(), round(float(s) * 10**SCALE_DIGITS))
        for row, s in zip(values, scale.squeeze(1), strict=True)
    ]


def dequantize(data: bytes, scale_e12: int) -> list[float]:
    """int8 bytes back to floats: each byte (two's complement) times `scale_e12` / 10^12."""
    scale = scale_e12 / 10**SCALE_DIGITS
    return [(b - 256 if b > 127 else b) * scale for b in data]


def _int8(byte: int) -> int:
    return byte - 256 if byte > 127 else byte


def requantize(data: bytes, scale_e12: int, step_e12: int) -> tuple[bytes, int]:
    """int8 values at scale `scale_e12` re-quantized to the fixed scale `step_e12` (both in units of 1e-12): each
    `q * scale / step` rounded to the nearest integer (halves away from zero) and clamped to [-127, 127], in exact
    integer arithmetic. Returns `(bytes, step_e12)`. Raises ValueError for a step that is not positive."""
    if step_e12 <= 0:
        raise ValueError(f"the step must be positive, got {step_e12}")
    out = bytearray()
    for byte in data:
        value = _int8(byte) * scale_e12
        steps = min(127, (2 * abs(value) + step_e12) // (2 * step_e12))
        out.append((steps if value >= 0 else -steps) & 0xFF)
    return bytes(out), step_e12


def sign_bits(data: bytes) -> tuple[bytes, int]:
    """int8 values as their signs, +1 for a positive value and -1 otherwise, with `scaleE12` = 10^12 / sqrt(n)
    (floored) so the vector has unit length: `(bytes, scaleE12)`. Raises ValueError for empty data."""
    if not data:
        raise ValueError("no values to take signs of")
    return bytes(1 if 0 < b < 128 else 0xFF for b in data), math.isqrt(10 ** (2 * SCALE_DIGITS) // len(data))


def canonical_embedding(data: bytes, scale_e12: int, step_e12: int) -> tuple[bytes, int]:
    """An embed output in the consensus form of `step_e12`: `requantize` for a positive step, `sign_bits` for 0."""
    return sign_bits(data) if step_e12 == 0 else requantize(data, scale_e12, step_e12)


class EmbedModel:
    """Sentence embeddings: `(string text)` -> `(bytes embedding as int8, uint256 scaleE12)`."""

    input_types: tuple[str, ...] = ("string",)
    output_types: tuple[str, ...] = ("bytes", "uint256")
    input_names: tuple[str, ...] = ("text",)
    output_names: tuple[str, ...] = ("embedding", "scaleE12")

    def __init__(
        self,
        name: str = "embed/minilm-l6@1",
        *,
        model_path: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        consensus_step_e12: int = DEFAULT_CONSENSUS_STEP_E12,
        languages: tuple[str, ...] | None = DEFAULT_LANGUAGES,
    ) -> None:
        if isinstance(consensus_step_e12, bool) or not isinstance(consensus_step_e12, int) or consensus_step_e12 < 0:
            raise ValueError(f"the consensus step must be a non-negative integer, got {consensus_step_e12!r}")
        self.name = name
        self.consensus_step_e12 = consensus_step_e12
        self.languages = languages
        self.encoder = SentenceEncoder(
            model_path or packaged_minilm_path(), pick_device(device), dtype=dtype, max_length=MAX_TOKENS
        )
        self._gate: TextGate | None = None

    @property
    def device(self) -> str:
        return self.encoder.device

    def weight_files(self) -> list[Path]:
        """The model's folder (weights, config, tokenizer): what its attestation digest is taken over."""
        return [Path(self.encoder.model_path)]

    def load(self) -> None:
        self.encoder.load()
        self._gate = TextGate(self.encoder.tokenizer, max_tokens=self.encoder.max_length, languages=self.languages)
        self.predict([("warm up",)])

    def check(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """`(text,)` if the model can read the text whole (`TextGate`); raises `InputError` with the reason otherwise.
        An over-long text is refused, not cut, and not split into windows (README: "Input limits")."""
        text = check_text(args[0], field="text", max_chars=MAX_TEXT_CHARS)
        if self._gate is None:
            raise ModelError("the model is not loaded")
        return (self._gate.check(text, "text"),)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unquantized unit vectors (for off-chain callers and tests)."""
        return [list(map(float, row)) for row in self.encoder.encode(texts)]

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return list(quantize_rows(self.encoder.encode([text for (text,) in inputs])))

    def consensus_form(self) -> dict[str, Any]:
        """The "rounded" form (a fixed scale `step_e12`) or, for step 0, "sign"."""
        step = self.consensus_step_e12
        if step == 0:
            return {
                "form": "sign",
                "fields": ["embedding", "scaleE12"],
                "step_e12": 0,
                "description": "each value's sign as int8 +1/-1; scaleE12 = 1e12 / sqrt(dimensions), floored",
            }
        form: dict[str, Any] = {"form": "rounded", "fields": ["embedding", "scaleE12"], "step_e12": step}
        if str(step).rstrip("0") == "1" and step <= 10**SCALE_DIGITS:  # a power of ten: say it in decimals
            form["decimals"] = SCALE_DIGITS - (len(str(step)) - 1)
        form["description"] = (
            f"values re-quantized to the fixed scale {step / 10**SCALE_DIGITS:g} (rounded, halves away from zero, "
            f"clamped to int8 ±127); scaleE12 = {step}"
        )
        return form

    def canonical(self, output: tuple[Any, ...]) -> tuple[Any, ...]:
        """`(embedding, scaleE12)` in the consensus form (`canonical_embedding`)."""
        data, scale_e12 = output
        return canonical_embedding(bytes(data), int(scale_e12), self.consensus_step_e12)

    def info(self) -> dict[str, Any]:
        return {
            "kind": "sentence-embedding",
            "dimensions": self.encoder.dimensions if self.encoder._model is not None else None,
            "quantization": "int8, symmetric; value = int8 * scaleE12 / 1e12",
            "dtype": str(self.encoder.dtype).removeprefix("torch."),
            "input_limits": {"max_text_chars": MAX_TEXT_CHARS, **(self._gate.info() if self._gate else {})},
        }
