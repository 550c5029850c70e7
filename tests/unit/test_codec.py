from __future__ import annotations

import pytest
from eth_abi.abi import encode

from containers.runtime.codec import AbiCodec, CodecError, parse_hex

CLASSIFY = AbiCodec(("string",), ("string", "uint256"))
RAW = AbiCodec((), ())


def test_decodes_what_solidity_abi_encode_produces() -> None:
    assert CLASSIFY.decode_input(encode(["string"], ["héllo wörld"])) == ("héllo wörld",)


def test_encode_output_round_trips_through_abi_decode() -> None:
    from eth_abi.abi import decode

    out = CLASSIFY.encode_output(("positive", 987_654))
    assert decode(["string", "uint256"], out) == ("positive", 987_654)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "input is empty"),
        (b"\xde\xad\xbe\xef", "cannot decode input as (string)"),
        (encode(["uint256"], [5]), "cannot decode input as (string)"),
    ],
)
def test_bad_input_names_the_expected_types(raw: bytes, reason: str) -> None:
    with pytest.raises(CodecError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        CLASSIFY.decode_input(raw)


def test_invalid_utf8_is_reported_as_such() -> None:
    bad = encode(["bytes"], [b"\xff\xfe\xfd"])  # same layout as a string, but not UTF-8
    with pytest.raises(CodecError, match="not valid UTF-8"):
        CLASSIFY.decode_input(bad)


def test_output_of_the_wrong_shape_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match=r"cannot encode output as \(string,uint256\)"):
        CLASSIFY.encode_output(("positive", "not a number"))


def test_raw_codec_passes_bytes_through() -> None:
    assert RAW.decode_input(b"\x01\x02") == (b"\x01\x02",)
    assert RAW.encode_output((b"\x01\x02",)) == b"\x01\x02"
    with pytest.raises(CodecError, match="exactly one bytes value"):
        RAW.encode_output(("text",))


@pytest.mark.parametrize(("text", "expected"), [("0x0a0b", b"\n\x0b"), ("0a0b", b"\n\x0b"), ("", b"")])
def test_parse_hex_accepts_with_and_without_prefix(text: str, expected: bytes) -> None:
    assert parse_hex(text) == expected


def test_parse_hex_rejects_non_hex() -> None:
    with pytest.raises(CodecError, match="not a hex string"):
        parse_hex("0xzz")
