"""A whole Infera system on one machine, for `infera devnet`, the tests and the benchmarks.

- `processes`: the chain tools, starting and watching processes, waiting on a condition (`Proc`, `wait_until`).
- `deployment`: anvil's accounts, the devnet's fees and stakes, what it deploys (`Deployment`, `dev_account`).
- `system`: `Devnet`, which starts anvil, the contracts, model containers and nodes, and stops them all.
- `models`: the model servers `infera devnet --model` starts, and the example consumers that ask them.
- `manifest`: `devnet.json`, what a dApp script reads: RPC, addresses, ABIs, models, dev accounts.
- `run`: `run_devnet`, the `infera devnet` command.
"""

from node.devnet.deployment import (
    ANVIL_MNEMONIC,
    DEFAULT_FEE_WEI,
    DEFAULT_MODEL,
    DEVNET_ATTESTATION_SLASH_WEI,
    DEVNET_CHALLENGE_WINDOW_S,
    DEVNET_MIN_FAILURE_REPORTS,
    DEVNET_MIN_STAKE_WEI,
    DEVNET_REEXECUTION_QUORUM,
    DEVNET_REEXECUTION_SLASH_WEI,
    DEVNET_UNBONDING_S,
    DEVNET_VOTE_WINDOW_S,
    Deployment,
    dev_account,
)
from node.devnet.processes import (
    CONTRACTS_DIR,
    ROOT,
    DevnetError,
    Proc,
    forge_build,
    free_port,
    http_ok,
    port_free,
    tcp_open,
    tool,
    wait_until,
)
from node.devnet.run import run_devnet
from node.devnet.system import Devnet

# The name the tests used before `http_ok` was public.
_http_ok = http_ok

__all__ = [
    "ANVIL_MNEMONIC",
    "CONTRACTS_DIR",
    "DEFAULT_FEE_WEI",
    "DEFAULT_MODEL",
    "DEVNET_ATTESTATION_SLASH_WEI",
    "DEVNET_CHALLENGE_WINDOW_S",
    "DEVNET_MIN_FAILURE_REPORTS",
    "DEVNET_MIN_STAKE_WEI",
    "DEVNET_REEXECUTION_QUORUM",
    "DEVNET_REEXECUTION_SLASH_WEI",
    "DEVNET_UNBONDING_S",
    "DEVNET_VOTE_WINDOW_S",
    "ROOT",
    "Deployment",
    "Devnet",
    "DevnetError",
    "Proc",
    "_http_ok",
    "dev_account",
    "forge_build",
    "free_port",
    "http_ok",
    "port_free",
    "run_devnet",
    "tcp_open",
    "tool",
    "wait_until",
]
