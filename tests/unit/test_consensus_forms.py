"""Each model's consensus form as pure logic: exact integer rounding at its boundaries, the output ABI kept,
canonical forms idempotent; the runtime's default ("bytes") and the wire field."""

from __future__ import annotations

import math

import pytest
from eth_abi.abi import decode, encode

from containers.classify.model import SCORE_SCALE, _TextClassifier, canonical_score
from containers.echo.model import EchoModel
from containers.embed.model import (
    DEFAULT_CONSENSUS_STEP_E12,
    EmbedModel,
    canonical_embedding,
    quantize,
    requantize,
    sign_bits,
)
from containers.llm.model import LLMModel
from containers.runtime.model import BYTES_FORM, ConsensusModel, canonical_output, consensus_form
from containers.runtime.wire import chain_request


class Classifier(_TextClassifier):
    """The classifiers' shared output logic, without weights."""

    def __init__(self, step_e6: int) -> None:
        self.name = "classify/test@1"
        self.consensus_score_step_e6 = step_e6


def int8s(data: bytes) -> list[int]:
    return [b - 256 if b > 127 else b for b in data]


# ---------------------------------------------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("score", "step", "expected"),
    [
        (999_999, 10_000, 990_000),
        (10_000, 10_000, 10_000),
        (9_999, 10_000, 0),
        (1_000_000, 10_000, 1_000_000),
        (123_456, 1, 123_456),
        (754_321, 100_000, 700_000),
        (754_321, 0, 0),
        (1_000_000, 0, 0),
    ],
)
def test_the_score_is_rounded_down_to_its_step(score: int, step: int, expected: int) -> None:
    assert canonical_score(score, step) == expected
    assert canonical_score(expected, step) == expected  # idempotent


@pytest.mark.parametrize("step", [-1, SCORE_SCALE + 1, True, 0.5])
def test_a_score_step_outside_0_to_a_million_is_refused(step: object) -> None:
    with pytest.raises(ValueError, match="consensus score step"):
        canonical_score(500_000, step)  # type: ignore[arg-type]


@pytest.mark.parametrize("step", [0, 10_000])
def test_the_label_form_keeps_the_label_and_the_abi(step: int) -> None:
    model = Classifier(step)
    assert isinstance(model, ConsensusModel)
    out = model.canonical(("negative", 876_543))
    assert out == ("negative", 0 if step == 0 else 870_000)
    assert decode(["string", "uint256"], encode(["string", "uint256"], list(out))) == out
    assert model.canonical(out) == out
    form = consensus_form(model)
    assert (form["form"], form["score_step_e6"]) == ("label", step)


# ------------------------------------------------------------------------------------------------------- embed


def test_requantizing_rounds_halves_away_from_zero_in_exact_integers() -> None:
    step = 10**10  # 0.01
    # values (q * scale): 0.005 (half: up), -0.005 (half: away, down), 0.00499999 (down), 0.015 (half: up)
    scale = 5 * 10**9  # 0.005
    data = bytes(v & 0xFF for v in (1, -1, 0, 3, -3, 127))
    out, out_scale = requantize(data, scale, step)
    assert out_scale == step
    assert int8s(out) == [1, -1, 0, 2, -2, 64]  # 0.635 -> 64 (63.5 rounds away from zero)
    just_under = requantize(bytes([1]), 4_999_999_999, step)[0]
    assert int8s(just_under) == [0]


def test_requantizing_clamps_to_int8() -> None:
    out, _ = requantize(bytes([127, 0x81]), 10**11, 10**10)  # ±12.7 / 0.01 = ±1270
    assert int8s(out) == [127, -127]


def test_requantizing_keeps_the_length_and_the_abi_and_is_idempotent() -> None:
    vector = [math.sin(i) / 8 for i in range(384)]
    data, scale = quantize(vector)
    out = requantize(data, scale, DEFAULT_CONSENSUS_STEP_E12)
    assert len(out[0]) == 384
    assert decode(["bytes", "uint256"], encode(["bytes", "uint256"], list(out))) == out
    assert requantize(*out, DEFAULT_CONSENSUS_STEP_E12) == out
    # within half a step of the original values (plus the int8 quantization's own half step)
    for got, want in zip(int8s(out[0]), vector, strict=True):
        assert abs(got / 100 - want) <= 0.005 + scale / 2e12 + 1e-12


def test_requantizing_refuses_a_step_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        requantize(b"\x01", 10**10, -5)


def test_sign_bits_are_a_unit_vector_of_signs() -> None:
    data = bytes(v & 0xFF for v in (5, -3, 0, 127, -127, 1))
    out, scale = sign_bits(data)
    assert int8s(out) == [1, -1, -1, 1, -1, 1]  # zero counts as negative: one boundary, not two
    assert scale == math.isqrt(10**24 // 6)
    assert abs(len(out) * (scale / 1e12) ** 2 - 1) < 1e-9
    assert canonical_embedding(out, scale, 0) == (out, scale)
    with pytest.raises(ValueError, match="no values"):
        sign_bits(b"")


def test_embed_model_states_its_form_and_applies_it() -> None:
    model = EmbedModel(model_path="/nonexistent")  # nothing is loaded by the constructor
    form = consensus_form(model)
    assert (form["form"], form["decimals"], form["step_e12"]) == ("rounded", 2, 10**10)
    data, scale = quantize([0.3, -0.2, 0.001])
    assert model.canonical((data, scale)) == requantize(data, scale, 10**10)
    assert consensus_form(EmbedModel(model_path="/nonexistent", consensus_step_e12=0))["form"] == "sign"
    assert "decimals" not in consensus_form(EmbedModel(model_path="/nonexistent", consensus_step_e12=7_812_500_000))
    with pytest.raises(ValueError, match="non-negative"):
        EmbedModel(model_path="/nonexistent", consensus_step_e12=-1)


# ----------------------------------------------------------------------------------------------- runtime, wire


def test_a_model_without_a_form_is_compared_as_bytes() -> None:
    echo = EchoModel()
    assert not isinstance(echo, ConsensusModel)
    assert consensus_form(echo) == BYTES_FORM
    assert canonical_output(echo, (b"\x00\x01",)) == (b"\x00\x01",)


def test_the_wire_carries_consensus_only_when_asked() -> None:
    assert "consensus" not in chain_request(b"\x01")
    assert chain_request(b"\x01", consensus=True)["consensus"] is True


def test_the_llm_states_bytes_and_leaves_its_output_as_it_is() -> None:
    llm = LLMModel(device="cpu")  # nothing is loaded by the constructor
    assert consensus_form(llm)["form"] == "bytes"
    assert llm.canonical(("a greedy answer", 3)) == ("a greedy answer", 3)
