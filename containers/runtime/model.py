"""What a model server implements: load once, check each input, predict batches, optionally stream, optionally
state a consensus form (how its output bytes are made to agree across honest nodes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class ModelError(RuntimeError):
    """Raised by a model when it fails on input it accepted (answered with HTTP 500)."""


class InputError(ValueError):
    """Raised by `check` when a decoded input is unusable (answered with HTTP 400, with this message)."""


class Model(Protocol):
    """A model behind the runtime. `predict` runs on the model's worker thread and gets batches of checked inputs."""

    #: Name reported by /info and used in MQTT topics, e.g. "classify/minilm-sentiment@1".
    name: str
    #: ABI types of the input and output tuples; empty means raw bytes.
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    #: Field names for off-chain (JSON) input and output, in the order of the ABI types.
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    @property
    def device(self) -> str: ...

    def load(self) -> None:
        """Loads weights and warms up; called once, on the worker thread, before the server reports ready."""

    def check(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Validates (and may normalise) one decoded input; raises `InputError` with a reason a caller can act on."""
        ...

    def predict(self, inputs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Returns one output tuple per checked input, in order."""
        ...

    def info(self) -> dict[str, Any]:
        """Extra facts for /info (labels, dtype, limits)."""
        ...


@runtime_checkable
class StreamingModel(Protocol):
    """A model that can also hand out its output piece by piece (text generation)."""

    def stream(self, args: tuple[Any, ...]) -> Iterator[str]:
        """Yields pieces of the output for one checked input; joined, they equal `predict`'s text."""
        ...


@runtime_checkable
class SchedulingModel(Protocol):
    """A model that batches its own work step by step (continuous batching, `containers/llm/engine.py`): the server
    hands it each checked input as it arrives instead of gathering batches for `predict`."""

    def schedule(self, args: tuple[Any, ...], on_piece: Callable[[str], None] | None = None) -> Future[tuple[Any, ...]]:
        """Starts one checked input; the future gets its output tuple, or `InputError` (answered 400) or another
        exception (500). `on_piece`, called from the model's thread, gets the text as it is made."""
        ...

    def close(self) -> None:
        """Finishes what was scheduled and stops; called once, at shutdown."""


@runtime_checkable
class WeightedModel(Protocol):
    """A model whose weights are files: their sha256 is the model digest an attestation names."""

    def weight_files(self) -> list[Path]:
        """The files (or folders of files) holding the model's weights."""
        ...


#: The consensus form of a model that states none: its output bytes are compared as they are (`canonical` is the
#: identity). Right for exact outputs (echo) and for greedy text, where rounding cannot help.
BYTES_FORM: dict[str, Any] = {"form": "bytes", "description": "output bytes compared as they are"}


@runtime_checkable
class ConsensusModel(Protocol):
    """A model whose consensus answers (a body with `consensus: true`) are canonicalized so that honest nodes on
    other hardware, precisions or thread counts deliver identical bytes. `canonical` keeps the output ABI: a consumer
    decodes a consensus answer exactly as a plain one."""

    def consensus_form(self) -> dict[str, Any]:
        """JSON for /info's `consensus`: `{"form": "bytes" | "label" | "rounded" | ..., "description": "...", ...}`
        with the parameters (steps, fields) another node needs to canonicalize the same way."""
        ...

    def canonical(self, output: tuple[Any, ...]) -> tuple[Any, ...]:
        """The consensus form of one output tuple (the types `predict` returns, same ABI). Must be exact (integer
        arithmetic, no floats), deterministic and idempotent: `canonical(canonical(x)) == canonical(x)`."""
        ...


def consensus_form(model: Model) -> dict[str, Any]:
    """The model's consensus form for /info: its own, or `BYTES_FORM` for a model that states none."""
    if isinstance(model, ConsensusModel):
        return model.consensus_form()
    return dict(BYTES_FORM)


def canonical_output(model: Model, output: tuple[Any, ...]) -> tuple[Any, ...]:
    """`output` in the model's consensus form (the identity for a model that states none)."""
    if isinstance(model, ConsensusModel):
        return model.canonical(output)
    return output


def visible_text(value: Any, field: str) -> str:
    """`value` if it is a string of valid Unicode (no lone surrogate, which JSON's `\\ud83d` can carry: it has no
    UTF-8 form and tokenizers fail on it) with a visible character (not whitespace, not a control or format character
    such as NUL or a zero-width space: tokenizers drop those, and the model would read nothing); raises `InputError`
    otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{field} must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate ("\ud83d" in JSON): no tokenizer can read it
        raise InputError(
            f"{field} is not valid Unicode: a lone surrogate U+{ord(value[exc.start]):04X} at character {exc.start} "
            "(half of an escaped emoji pair?); send UTF-8 text"
        ) from None
    if not any(ch.isprintable() and not ch.isspace() for ch in value):
        raise InputError(
            f"{field} has no visible characters (only control characters such as NUL, or whitespace): send text"
        )
    return str(value)


def check_text(value: Any, *, field: str, max_chars: int) -> str:
    """The usual checks on a text input: a string with a visible character (`visible_text`) within the length limit
    (`max_chars` characters). Raises `InputError` naming `field`."""
    text = visible_text(value, field)
    if len(text) > max_chars:
        raise InputError(f"{field} is {len(text)} characters; the limit is {max_chars}")
    return text


def pick_device(requested: str | None = None) -> str:
    """`cuda` when a GPU is visible (or the device asked for), else `cpu`."""
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Sapphire Rapids and later), where oneDNN runs bf16 matmuls fast."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else False


def torch_dtype(device: str, requested: str | None = None, *, cpu_bf16: bool = False) -> Any:
    """The dtype to run in: what was asked for (`float16`, `bfloat16`, `float32`), else fp16 on CUDA, and on CPU
    bf16 where the model allows it (`cpu_bf16`) and the CPU has AMX, fp32 otherwise."""
    import torch

    if requested:
        dtype = getattr(torch, requested, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"--dtype must be float16, bfloat16 or float32, got {requested!r}")
        return dtype
    if device.startswith("cuda"):
        return torch.float16
    return torch.bfloat16 if cpu_bf16 and cpu_has_amx() else torch.float32
