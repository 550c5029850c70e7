"""The node's fee policy: whether a request pays enough, in a token this node accepts, to be worth serving.

Judged from the request's log alone (token and fee per node), before any container call or transaction: a request
outside the policy costs the node nothing but a row in its store. Policy is per model (`[[models]]
accepted_payments` in the config): a map from payment token (the zero address for ETH) to the least fee per node, in
the token's smallest unit. The default accepts ETH at any fee above zero and no ERC-20, so a node never works for
free unless its operator says so (`ETH = 0`). The minimum is flat, so each model also caps the callback gas a
request may ask for (`max_callback_gas`, default 500,000): the node pays for that gas, and a 2,000,000-gas callback
for a 1-wei fee would cost it ~0.0025 ETH at 1 gwei.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.config import ETH_TOKEN, ModelConfig

#: Why a request was skipped, as the `reason` label of `infera_requests_skipped`.
TOKEN_NOT_ACCEPTED = "token_not_accepted"
FEE_BELOW_MINIMUM = "fee_below_minimum"
CALLBACK_GAS_TOO_HIGH = "callback_gas_too_high"


@dataclass(frozen=True, slots=True)
class Skip:
    """A request this node does not serve: `kind` (a metric label, one of the constants above) and `reason` (one
    line an operator or the dApp developer can act on, shown by `infera jobs` and the job API)."""

    kind: str
    reason: str


def token_name(token: str) -> str:
    """`ETH` for the zero address, else the token's address."""
    return "ETH" if token == ETH_TOKEN else token


def judge(model: ModelConfig, token: str, fee_per_node: int, callback_gas_limit: int = 0) -> Skip | None:
    """None if `model`'s policy accepts a request paying `fee_per_node` (smallest units, gross: the protocol's cut
    comes off it) in `token` (a checksummed address; the zero address for ETH) to each node and asking for a callback
    of `callback_gas_limit` gas (which the node pays for), else why not."""
    if callback_gas_limit > model.max_callback_gas:
        return Skip(
            CALLBACK_GAS_TOO_HIGH,
            f"callback gas limit {callback_gas_limit} is above this node's maximum {model.max_callback_gas} for"
            f" {model.name} (the node pays for the callback's gas)",
        )
    minimum = model.minimum_fee(token)
    if minimum is None:
        accepted = ", ".join(token_name(t) for t in model.accepted_payments) or "none"
        return Skip(
            TOKEN_NOT_ACCEPTED,
            f"paid in {token_name(token)}, which {model.name} does not accept here (accepted: {accepted})",
        )
    if fee_per_node < minimum:
        return Skip(
            FEE_BELOW_MINIMUM,
            f"fee per node {fee_per_node} is below this node's minimum {minimum} for {model.name}"
            f" in {token_name(token)}",
        )
    return None
