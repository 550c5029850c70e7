"""The devnet's chain: anvil's well-known accounts, the fees and stakes it uses, and what it deploys.

Guarantees: the accounts are anvil's public development ones (their keys hold only devnet ETH and are known to
everyone), so nothing here is a secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

# Anvil's public development mnemonic: its keys hold only devnet ETH and are known to everyone.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_MODEL = "classify/minilm-sentiment@1"
DEFAULT_FEE_WEI = 10**15
DEVNET_MIN_STAKE_WEI = 10**18
DEVNET_UNBONDING_S = 86_400


def dev_account(index: int) -> LocalAccount:
    """The anvil dev account at `index` (0 deploys, 1 runs the node, 2 is the dApp's user)."""
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return account


@dataclass(frozen=True)
class Deployment:
    """The devnet's deployed contracts (registry, coordinator, example consumer, subscription manager) and the block
    they start at."""

    coordinator: Contract
    consumer: Contract
    start_block: int
    registry: Contract
    subscriptions: Contract | None = None
