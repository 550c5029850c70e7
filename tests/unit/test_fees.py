"""The fee policy: which payments a model is served for, judged from the request's token and fee alone."""

from __future__ import annotations

import random

import pytest

from node.config import ETH_TOKEN, MAX_FEE_PER_NODE, ModelConfig, parse_config
from node.errors import ConfigError
from node.jobs import fees

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


def model(**payments: int | str) -> ModelConfig:
    return ModelConfig(name="classify/x@1", url="http://127.0.0.1:1", accepted_payments=payments)


def test_the_default_never_works_for_free() -> None:
    m = ModelConfig(name="classify/x@1", url="http://127.0.0.1:1")
    skip = fees.judge(m, ETH_TOKEN, 0)
    assert skip is not None
    assert skip.kind == fees.FEE_BELOW_MINIMUM
    assert fees.judge(m, ETH_TOKEN, 1) is None
    unlisted = fees.judge(m, TOKEN, 10**30)
    assert unlisted is not None
    assert unlisted.kind == fees.TOKEN_NOT_ACCEPTED
    assert TOKEN in unlisted.reason
    assert "accepted: ETH" in unlisted.reason


def test_minimums_per_token_hold_at_the_edge() -> None:
    rng = random.Random(17)
    for _ in range(500):
        eth_min, token_min = rng.randrange(0, 10**20), rng.randrange(0, MAX_FEE_PER_NODE + 1)
        m = model(ETH=eth_min, **{TOKEN.lower(): str(token_min)})
        for token, minimum in ((ETH_TOKEN, eth_min), (TOKEN, token_min)):
            fee = minimum + rng.choice((-1, 0, 1, rng.randrange(-(10**6), 10**6)))
            skip = fees.judge(m, token, fee)
            assert (skip is None) == (fee >= minimum), (token, minimum, fee)
            if skip is not None:
                assert skip.kind == fees.FEE_BELOW_MINIMUM
                assert str(minimum) in skip.reason
        assert fees.judge(m, OTHER, 10**40) is not None


def test_eth_zero_serves_free_requests_when_the_operator_says_so() -> None:
    assert fees.judge(model(ETH=0), ETH_TOKEN, 0) is None


@pytest.mark.parametrize(
    ("payments", "named"),
    [
        ({"usdc": 1}, "'usdc' is neither ETH nor an ERC-20 token address"),
        ({"ETH": -1}, "ETH = -1: a minimum fee cannot be negative"),
        ({"ETH": 1, "eth": 2}, "listed twice"),
        ({"ETH": "lots"}, "ETH = 'lots': a minimum fee is an integer or a string of decimal digits"),
        ({"ETH": "-5"}, "ETH = '-5': a minimum fee is an integer or a string of decimal digits"),
        ({}, "accepted_payments is empty: the model would serve no request"),
        ({"ETH": True}, "ETH = true: a minimum fee is an integer"),
        ({"ETH": False}, "ETH = false: a minimum fee is an integer"),
        ({"ETH": 2**80}, f"above the Coordinator's fee cap 2**80 - 1 ({2**80 - 1})"),
        ({"ETH": str(10**27)}, "the model would never be served"),
        ({"ETH": 1e30}, 'is a float: write the integer in full, ETH = "1' + "0" * 30 + '" (as a quoted string'),
        ({"ETH": 1e18}, "is a float: write the integer in full, ETH = 1" + "0" * 18 + " (as a quoted string"),
        ({"ETH": 0.5}, "a minimum fee is a whole number"),
        (
            {"0xA0B86991c6218b36c1d19D4a2e9Eb0cE3606eB48": 1},
            "checksum mismatch: did you mean 0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48?",
        ),
        (
            {"0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48": 1, "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48": 2},
            "listed twice",
        ),
    ],
)
def test_a_bad_policy_is_named_by_key(payments: dict[str, object], named: str) -> None:
    data = {
        "chain": {"rpc_url": "http://x", "coordinator_address": "0x" + "11" * 20},
        "models": [{"name": "m", "url": "http://y", "accepted_payments": payments}],
    }
    with pytest.raises(ConfigError, match=r"models\.0\.accepted_payments") as info:
        parse_config(data)
    assert named in str(info.value)


def test_minimums_are_integers_or_digit_strings_up_to_the_fee_cap() -> None:
    m = model(ETH=str(MAX_FEE_PER_NODE), **{TOKEN.upper().replace("0X", "0x"): 0})
    assert m.accepted_payments == {ETH_TOKEN: 2**80 - 1, TOKEN: 0}
    assert fees.judge(m, ETH_TOKEN, 2**80 - 1) is None


def test_max_callback_gas_defaults_to_half_a_million_and_is_bounded() -> None:
    assert ModelConfig(name="m", url="http://127.0.0.1:1").max_callback_gas == 500_000
    assert ModelConfig(name="m", url="http://127.0.0.1:1", max_callback_gas=16_777_215).max_callback_gas == 2**24 - 1
    for bad in (0, 2**24):
        data = {
            "chain": {"rpc_url": "http://x", "coordinator_address": "0x" + "11" * 20},
            "models": [{"name": "m", "url": "http://y", "max_callback_gas": bad}],
        }
        with pytest.raises(ConfigError, match=r"models\.0\.max_callback_gas"):
            parse_config(data)
