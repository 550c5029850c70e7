"""`(string text)` → `(bytes embedding, uint256 scaleE12)`: a unit-length sentence embedding quantized to int8.

On-chain, `embedding[i]` is a two's-complement int8 and the value is `int8(embedding[i]) * scaleE12 / 1e12`
(symmetric quantization, `scale = max|x| / 127`). 384 bytes for MiniLM instead of 12 KB of ABI `int256[]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from containers.embed.encoder import SentenceEncoder, packaged_minilm_path
from containers.runtime.model import check_text, pick_device

SCALE_DIGITS = 12
MAX_TEXT_CHARS = 4096


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
    ) -> None:
        self.name = name
        self.encoder = SentenceEncoder(model_path or packaged_minilm_path(), pick_device(device), dtype=dtype)

    @property
    def device(self) -> str:
        return self.encoder.device

    def weight_files(self) -> list[Path]:
        """The model's folder (weights, config, tokenizer): what its attestation digest is taken over."""
        return [Path(self.encoder.model_path)]

    def load(self) -> None:
        self.encoder.load()
        self.predict([("warm up",)])

    def check(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (check_text(args[0], field="text", max_chars=MAX_TEXT_CHARS),)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unquantized unit vectors (for off-chain callers and tests)."""
        return [list(map(float, row)) for row in self.encoder.encode(texts)]

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return list(quantize_rows(self.encoder.encode([text for (text,) in inputs])))

    def info(self) -> dict[str, Any]:
        return {
            "kind": "sentence-embedding",
            "dimensions": self.encoder.dimensions if self.encoder._model is not None else None,
            "quantization": "int8, symmetric; value = int8 * scaleE12 / 1e12",
            "dtype": str(self.encoder.dtype).removeprefix("torch."),
            "max_text_chars": MAX_TEXT_CHARS,
        }
