"""A model that answers with its input: measures everything but inference."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from containers.runtime.model import InputError


class EchoModel:
    """Raw bytes in, the same bytes out; off-chain it echoes the `data` field."""

    input_types: tuple[str, ...] = ()
    output_types: tuple[str, ...] = ()
    input_names: tuple[str, ...] = ("data",)
    output_names: tuple[str, ...] = ("data",)

    def __init__(self, name: str = "echo", *, delay_ms: float = 0.0) -> None:
        self.name = name
        #: Simulated compute time per batch, for tests and benchmarks of everything around the model.
        self.delay_ms = delay_ms

    @property
    def device(self) -> str:
        return "cpu"

    def load(self) -> None:
        """Nothing to load."""

    def check(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if args[0] in (b"", "", None):
            raise InputError("data must not be empty")
        return args

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        if self.delay_ms:
            time.sleep(self.delay_ms / 1000)
        return [tuple(x) for x in inputs]

    def info(self) -> dict[str, Any]:
        return {
            "kind": "echo",
            "delay_ms": self.delay_ms,
            "input_limits": {
                "max_tokens": None,
                "over_limit": "bytes: the coordinator's maxInputBytes and the server's --max-body-bytes",
                "languages": "none: bytes are echoed as they are, a NUL included",
                "refuses": ["empty input"],
            },
        }
