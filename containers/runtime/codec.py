"""ABI codec between on-chain bytes and model arguments.

Guarantees: every decoding failure becomes a `CodecError` whose message says what was expected and what was
wrong, so the server can answer 400 with it; encoding is the exact inverse of Solidity's `abi.decode`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError, EncodingError


class CodecError(ValueError):
    """Raised when input cannot be decoded or output cannot be encoded with the declared ABI types."""


def parse_hex(data: str) -> bytes:
    """Parses a hex string with or without `0x`."""
    text = data[2:] if data.startswith(("0x", "0X")) else data
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CodecError("data is not a hex string") from None


@dataclass(frozen=True)
class AbiCodec:
    """Decodes request input and encodes model output with ABI types such as `("string",)`.

    Empty `input_types` / `output_types` mean raw bytes: the input is passed through as one `bytes` value and
    the output must be one `bytes` value, sent unchanged.
    """

    input_types: tuple[str, ...]
    output_types: tuple[str, ...]

    @property
    def input_signature(self) -> str:
        return f"({','.join(self.input_types)})" if self.input_types else "raw bytes"

    @property
    def output_signature(self) -> str:
        return f"({','.join(self.output_types)})" if self.output_types else "raw bytes"

    def decode_input(self, raw: bytes) -> tuple[Any, ...]:
        if not raw:
            raise CodecError(f"input is empty; expected ABI-encoded {self.input_signature}")
        if not self.input_types:
            return (raw,)
        try:
            return tuple(abi_decode(list(self.input_types), raw))
        except UnicodeDecodeError:
            raise CodecError(f"input is not valid UTF-8 text for {self.input_signature}") from None
        except (DecodingError, ValueError, OverflowError) as exc:
            raise CodecError(f"cannot decode input as {self.input_signature}: {exc}") from None

    def encode_output(self, values: Sequence[Any]) -> bytes:
        if not self.output_types:
            if len(values) != 1 or not isinstance(values[0], bytes | bytearray):
                raise CodecError("a raw-bytes model must return exactly one bytes value")
            return bytes(values[0])
        try:
            return abi_encode(list(self.output_types), list(values))
        except (EncodingError, TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"cannot encode output as {self.output_signature}: {exc}") from None
