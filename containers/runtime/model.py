"""What a model server implements: load once, then predict batches of decoded inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class ModelError(RuntimeError):
    """Raised by a model when it fails on input it accepted (answered with HTTP 500)."""


class InputError(ValueError):
    """Raised by a model when a decoded input is unusable (answered with HTTP 400, with this message)."""


class Model(Protocol):
    """A model behind the runtime. `predict` runs off the event loop and may be given several inputs at once."""

    #: Name reported by /info, e.g. "classify/minilm-sentiment@1".
    name: str
    #: ABI types of the input and output tuples; empty means raw bytes.
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    #: Field names used for off-chain (JSON) input and output, in the same order as the ABI types.
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    @property
    def device(self) -> str: ...

    def load(self) -> None:
        """Loads weights and warms up; called once, in a worker thread, before the server reports ready."""

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Returns one output tuple per input tuple, in order."""
        ...

    def info(self) -> dict[str, Any]:
        """Extra facts for /info (labels, dtype, limits)."""
        ...


def pick_device(requested: str | None = None) -> str:
    """`cuda` when a GPU is visible (or the device asked for), else `cpu`."""
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
