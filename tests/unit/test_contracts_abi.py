from __future__ import annotations

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak

from node.chain.artifacts import canonical_type as _canonical_type
from node.chain.contracts import CoordinatorAbi, load_artifact, model_id, signature

pytestmark = pytest.mark.usefixtures("contracts_built")

SAMPLES = {
    "address": "0x" + "11" * 20,
    "uint256": 7,
    "uint64": 8,
    "uint32": 9,
    "uint16": 10,
    "uint8": 3,
    "bytes": b"x",
    "bytes32": b"\x01" * 32,
}


@pytest.fixture(scope="module")
def abi() -> CoordinatorAbi:
    return CoordinatorAbi.from_artifacts()


def test_every_custom_error_in_the_abi_decodes_by_name(abi: CoordinatorAbi) -> None:
    errors = [e for e in abi.abi if e["type"] == "error"]
    assert len(errors) >= 10
    for entry in errors:
        types = [_canonical_type(p) for p in entry["inputs"]]
        data = keccak(text=signature(entry))[:4] + encode(types, [SAMPLES[t] for t in types])
        decoded = abi.decode_error(data)
        assert decoded.name == entry["name"]
        assert len(decoded.args) == len(types)


def test_unknown_revert_is_shown_by_selector_and_said_not_to_be_ours(abi: CoordinatorAbi) -> None:
    decoded = abi.decode_error(b"\x12\x34\x56\x78")
    assert decoded.name is None
    assert str(decoded) == "error 0x12345678 (not one of Infera's errors: the consumer's own, or another contract's)"


def test_error_string_reverts_decode(abi: CoordinatorAbi) -> None:
    data = keccak(text="Error(string)")[:4] + encode(["string"], ["boom"])
    assert str(abi.decode_error(data)) == 'Error(reason="boom")'


def test_deliver_calldata_matches_the_compiled_selector(abi: CoordinatorAbi) -> None:
    calldata = abi.deliver_calldata(5, b"\xaa")
    assert calldata[:4] == keccak(text="deliver(uint256,bytes)")[:4]
    assert calldata == abi.encode_call("deliver", 5, b"\xaa")


def test_request_created_topic_is_the_event_signature(abi: CoordinatorAbi) -> None:
    expected = keccak(text="RequestCreated(uint256,bytes32,address,bytes,address,uint256,uint32,uint16,uint64,address)")
    assert abi.request_created_topic == "0x" + expected.hex()


def test_model_id_is_keccak_of_the_name() -> None:
    assert model_id("classify/minilm-sentiment@1") == keccak(b"classify/minilm-sentiment@1")


def test_artifacts_carry_bytecode() -> None:
    assert len(load_artifact("Coordinator").bytecode) > 1000
