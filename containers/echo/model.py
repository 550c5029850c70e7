"""A model that answers with its input: measures everything but inference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class EchoModel:
    """Raw bytes in, the same bytes out; off-chain it echoes the `data` field."""

    input_types: tuple[str, ...] = ()
    output_types: tuple[str, ...] = ()
    input_names: tuple[str, ...] = ("data",)
    output_names: tuple[str, ...] = ("data",)

    def __init__(self, name: str = "echo") -> None:
        self.name = name

    @property
    def device(self) -> str:
        return "cpu"

    def load(self) -> None:
        """Nothing to load."""

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [tuple(x) for x in inputs]

    def info(self) -> dict[str, Any]:
        return {"kind": "echo"}
