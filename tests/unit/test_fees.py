"""The fee policy: which payments a model is served for, judged from the request's token and fee alone."""

from __future__ import annotations

import random

import pytest

from node.config import ETH_TOKEN, ModelConfig, parse_config
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
        eth_min, token_min = rng.randrange(0, 10**20), rng.randrange(0, 10**30)
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
        ({"ETH": -1}, "accepted_payments.ETH"),
        ({"ETH": 1, "eth": 2}, "listed twice"),
        ({"ETH": "lots"}, "accepted_payments.ETH"),
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
