"""Text classification: zero-shot over sentence embeddings, or any sequence-classification checkpoint.

Zero-shot: each label is described by a few example sentences; a label's prototype is the normalised mean of their
embeddings; a text gets the label whose prototype is most similar (cosine) and a score from a softmax over the
similarities. Checkpoint: the model's own labels (`config.id2label`) and softmax probabilities. Either way the
on-chain output is `(string label, uint256 scoreE6)`, the score in millionths.

Consensus form ("label"): the label as it is, the score rounded down to a multiple of `consensus_score_step_e6`
(0, the default: the score is 0). Measured (bench/consensus_forms.py, BENCHMARKS.md "Consensus forms"): the label
agrees across thread counts and precisions where the score's low digits do not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from containers.embed.encoder import SentenceEncoder, packaged_minilm_path
from containers.runtime.batching import default_token_budget, length_buckets
from containers.runtime.model import ModelError, check_text, pick_device, torch_dtype
from containers.runtime.text import TextGate

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
#: The score step of consensus answers, in millionths: 0 answers the label with score 0 (see the module).
DEFAULT_CONSENSUS_SCORE_STEP_E6 = 0
MAX_TEXT_CHARS = 4096
#: Tokens MiniLM reads, its [CLS] and [SEP] included: the length all-MiniLM-L6-v2 was published for
#: (`max_seq_length` in its sentence_bert_config.json). A longer text is refused, never cut.
MAX_TOKENS = 256
#: What the packaged MiniLM reads: its vocabulary and training data are English.
DEFAULT_LANGUAGES: tuple[str, ...] = ("en",)


def load_labels(path: str | Path) -> dict[str, list[str]]:
    """Reads `{"label": ["description", ...], ...}` from a JSON file and checks its shape."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read labels from {path}: {exc}") from None
    return check_labels(data)


def check_labels(data: Any) -> dict[str, list[str]]:
    """Labels from a JSON object (label -> descriptions); raises ValueError unless there are at least two."""
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


def score_e6(probability: float) -> int:
    """A probability as the uint256 the contract gets: millionths, floored, within [0, 1,000,000]."""
    return min(SCORE_SCALE, max(0, math.floor(probability * SCORE_SCALE)))


def canonical_score(score: int, step_e6: int) -> int:
    """`score` (millionths) in the consensus form: rounded down to a multiple of `step_e6`, or 0 when `step_e6` is 0.
    Raises ValueError for a step outside [0, 1,000,000]."""
    check_score_step(step_e6)
    return 0 if step_e6 == 0 else score - score % step_e6


def check_score_step(step_e6: int) -> int:
    """A consensus score step (millionths, 0 to 1,000,000); raises ValueError for another value."""
    if isinstance(step_e6, bool) or not isinstance(step_e6, int) or not 0 <= step_e6 <= SCORE_SCALE:
        raise ValueError(f"the consensus score step must be an integer from 0 to {SCORE_SCALE}, got {step_e6!r}")
    return step_e6


class _TextClassifier:
    """What both classifiers share: the ABI, the text checks, the output format, the consensus form."""

    input_types: tuple[str, ...] = ("string",)
    output_types: tuple[str, ...] = ("string", "uint256")
    input_names: tuple[str, ...] = ("text",)
    output_names: tuple[str, ...] = ("label", "scoreE6")
    name: str
    consensus_score_step_e6: int = DEFAULT_CONSENSUS_SCORE_STEP_E6
    _gate: TextGate | None = None

    def consensus_form(self) -> dict[str, Any]:
        """The "label" form: label as it is, `scoreE6` rounded down to a multiple of `score_step_e6` (0: zeroed)."""
        step = self.consensus_score_step_e6
        score = (
            "scoreE6 is 0" if step == 0 else f"scoreE6 rounded down to a multiple of {step} ({step / SCORE_SCALE:g})"
        )
        return {"form": "label", "fields": ["label"], "score_step_e6": step, "description": f"label as it is; {score}"}

    def canonical(self, output: tuple[Any, ...]) -> tuple[Any, ...]:
        """`(label, scoreE6)` in the consensus form: the label unchanged, the score by `canonical_score`."""
        label, score = output
        return (label, canonical_score(int(score), self.consensus_score_step_e6))

    def check(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """`(text,)` if the model can read the text whole (`TextGate`: visible, within the token limit, words it
        knows, its languages); raises `InputError` with the reason otherwise. A label is never given for part of a
        text: a contract acting on it would act on what it did not ask about."""
        text = check_text(args[0], field="text", max_chars=MAX_TEXT_CHARS)
        if self._gate is None:
            raise ModelError("the model is not loaded")
        return (self._gate.check(text, "text"),)

    def limits(self) -> dict[str, Any]:
        """The input limits for `/info` (`TextGate.info`, plus `max_text_chars`)."""
        return {"max_text_chars": MAX_TEXT_CHARS, **(self._gate.info() if self._gate else {})}

    def _probabilities(self, texts: Sequence[str]) -> tuple[list[str], Any]:
        raise NotImplementedError

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        names, probabilities = self._probabilities([text for (text,) in inputs])
        out: list[tuple[Any, ...]] = []
        for row in probabilities:
            best = int(row.argmax())
            out.append((names[best], score_e6(float(row[best]))))
        return out


class ZeroShotClassifier(_TextClassifier):
    """Labels described in words, matched against sentence embeddings (default: packaged MiniLM)."""

    def __init__(
        self,
        name: str = "classify/minilm-sentiment@1",
        *,
        model_path: str | None = None,
        labels: Mapping[str, Sequence[str]] | None = None,
        temperature: float = 0.05,
        device: str | None = None,
        dtype: str | None = None,
        consensus_score_step_e6: int = DEFAULT_CONSENSUS_SCORE_STEP_E6,
        languages: tuple[str, ...] | None = DEFAULT_LANGUAGES,
    ) -> None:
        self.name = name
        self.languages = languages
        self.consensus_score_step_e6 = check_score_step(consensus_score_step_e6)
        self.labels = check_labels(labels if labels is not None else DEFAULT_LABELS)
        self.temperature = temperature
        self.encoder = SentenceEncoder(
            model_path or packaged_minilm_path(), pick_device(device), dtype=dtype, max_length=MAX_TOKENS
        )
        self._prototypes: Any = None

    @property
    def device(self) -> str:
        return self.encoder.device

    def load(self) -> None:
        import torch

        self.encoder.load()
        self._gate = TextGate(self.encoder.tokenizer, max_tokens=self.encoder.max_length, languages=self.languages)
        prototypes = [self.encoder.encode(descriptions).mean(dim=0) for descriptions in self.labels.values()]
        self._prototypes = torch.nn.functional.normalize(torch.stack(prototypes), dim=-1)
        self.predict([("warm up",)])

    def weight_files(self) -> list[Path]:
        """The embedding model's folder (weights, config, tokenizer): what `/info`'s `model_digest` is taken over."""
        return [Path(self.encoder.model_path)]

    def _probabilities(self, texts: Sequence[str]) -> tuple[list[str], Any]:
        import torch

        similarities = self.encoder.encode(texts) @ self._prototypes.T
        return list(self.labels), torch.softmax(similarities / self.temperature, dim=-1)

    def info(self) -> dict[str, Any]:
        return {
            "kind": "zero-shot-embedding",
            "labels": list(self.labels),
            "temperature": self.temperature,
            "input_limits": self.limits(),
            "dtype": str(self.encoder.dtype).removeprefix("torch."),
        }


class CheckpointClassifier(_TextClassifier):
    """Any `AutoModelForSequenceClassification` checkpoint, by local path or (with hub access) by name."""

    def __init__(
        self,
        checkpoint: str,
        name: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int = MAX_TOKENS,
        token_budget: int | None = None,
        consensus_score_step_e6: int = DEFAULT_CONSENSUS_SCORE_STEP_E6,
        languages: tuple[str, ...] | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.languages = languages
        self.consensus_score_step_e6 = check_score_step(consensus_score_step_e6)
        self.name = name or f"classify/{Path(checkpoint).name}"
        self._device = pick_device(device)
        self.dtype = torch_dtype(self._device, dtype)
        self.max_length = max_length
        self.token_budget = token_budget or default_token_budget(self._device)
        self._tokenizer: Any = None
        self._model: Any = None
        self._labels: list[str] = []

    @property
    def device(self) -> str:
        return self._device

    def weight_files(self) -> list[Path]:
        """The checkpoint's folder when it is a local one (what `/info`'s `model_digest` is taken over); none for a
        hub name (then `/info` reports no digest)."""
        return [Path(self.checkpoint)] if Path(self.checkpoint).is_dir() else []

    def load(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        model = AutoModelForSequenceClassification.from_pretrained(self.checkpoint, dtype=self.dtype)
        self._model = model.to(self._device).eval()
        id2label = self._model.config.id2label
        self._labels = [str(id2label[i]) for i in range(len(id2label))]
        positions = int(getattr(self._model.config, "max_position_embeddings", 0) or self.max_length)
        self.max_length = min(self.max_length, positions)
        self._gate = TextGate(self._tokenizer, max_tokens=self.max_length, languages=self.languages)
        self.predict([("warm up",)])

    def _probabilities(self, texts: Sequence[str]) -> tuple[list[str], Any]:
        import torch

        ids = self._tokenizer(list(texts), truncation=False)["input_ids"]
        if (longest := max((len(x) for x in ids), default=0)) > self.max_length:  # refused by `check` before
            raise ModelError(f"a text of {longest} tokens is over the model's {self.max_length}")
        probabilities = torch.empty((len(texts), len(self._labels)), dtype=torch.float32)
        for group in length_buckets([len(x) for x in ids], token_budget=self.token_budget, max_items=len(texts)):
            batch = self._tokenizer.pad({"input_ids": [ids[i] for i in group]}, return_tensors="pt").to(self._device)
            with torch.inference_mode():
                logits = self._model(**batch).logits
            probabilities[group] = torch.softmax(logits.float(), dim=-1).cpu()
        return self._labels, probabilities

    def info(self) -> dict[str, Any]:
        return {
            "kind": "sequence-classification",
            "checkpoint": self.checkpoint,
            "labels": self._labels,
            "input_limits": self.limits(),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
