"""The devnet's chain: anvil's well-known accounts, the fees and stakes it uses, and what it deploys.

Guarantees: the accounts are anvil's public development ones (their keys hold only devnet ETH and are known to
everyone), so nothing here is a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

# Anvil's public development mnemonic: its keys hold only devnet ETH and are known to everyone.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_MODEL = "classify/minilm-sentiment@1"
DEFAULT_FEE_WEI = 10**15
DEVNET_MIN_STAKE_WEI = 10**18
DEVNET_UNBONDING_S = 86_400
#: Failure reports that end a request on the devnet (mainnet default: 2). The devnet runs one node, so its report
#: ends a failing request at once instead of leaving it open until the deadline.
DEVNET_MIN_FAILURE_REPORTS = 1
#: Stake a node loses to the consumer for a delivery whose attestation does not verify (AttestationVerifier).
DEVNET_ATTESTATION_SLASH_WEI = 10**17
#: ReexecutionVerifier: seconds to open a dispute after a delivery, seconds more for votes, votes that decide, and the
#: stake the outvoted node loses to its challenger. An undisputed output is final after 20 minutes of chain time.
DEVNET_CHALLENGE_WINDOW_S = 600
DEVNET_VOTE_WINDOW_S = 600
DEVNET_REEXECUTION_QUORUM = 2
DEVNET_REEXECUTION_SLASH_WEI = 10**17


def dev_account(index: int) -> LocalAccount:
    """The anvil dev account at `index` (0 deploys, 1 runs the node, 2 is the dApp's user)."""
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return account


@dataclass(frozen=True)
class Deployment:
    """The devnet's deployed contracts (registry, coordinator, example consumer, subscription manager, the two
    verifiers the registry approved) and the block they start at. The optional ones are None only where a test builds
    a Deployment from contracts deployed by other means."""

    coordinator: Contract
    consumer: Contract
    start_block: int
    registry: Contract
    subscriptions: Contract | None = None
    attestation_verifier: Contract | None = None
    reexecution_verifier: Contract | None = None

    def addresses(self) -> dict[str, Any]:
        """Every deployed address, as `Devnet.deploy` writes them to `<workdir>/deployment.json`."""
        verifiers = {
            name: contract.address
            for name, contract in (
                ("attestation_verifier", self.attestation_verifier),
                ("reexecution_verifier", self.reexecution_verifier),
            )
            if contract is not None
        }
        return {
            "node_registry": self.registry.address,
            "coordinator": self.coordinator.address,
            "example_consumer": self.consumer.address,
            **({} if self.subscriptions is None else {"subscription_manager": self.subscriptions.address}),
            **verifiers,
            "start_block": self.start_block,
        }
