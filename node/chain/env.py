"""What the transaction layer's units share, as two frozen values `TxManager` (node/chain/tx.py) makes once and hands
to each unit that needs them; a unit keeps only its own collaborators beside them.

- `TxEnv`: what the layer talks to and by what rules: the RPC, the store, the coordinator and its ABI, the operator's
  policy, and the chain as the layer sees it.
- `TxBooks`: the layer's own shared state: the keys, the open transactions, the ready queue, the jobs' send history,
  and the one way a job is settled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress

from node.chain.batching import ReadyQueue
from node.chain.contracts import CoordinatorAbi
from node.chain.keys import KeyPool
from node.chain.ledger import OpenTxs
from node.chain.policy import TxPolicy
from node.chain.rpc import RpcPool
from node.chain.settle import JobHistory, Settler
from node.chain.subscriptions import ManagerTarget
from node.chain.view import ChainView
from node.jobs.store import Job, JobStore

if TYPE_CHECKING:
    from node.observability.metrics import Metrics


@dataclass(frozen=True)
class TxEnv:
    """The transaction layer's environment. Frozen: no unit swaps a part (the view itself moves with heads)."""

    rpc: RpcPool
    store: JobStore
    abi: CoordinatorAbi
    coordinator: ChecksumAddress
    policy: TxPolicy
    view: ChainView
    #: The SubscriptionManager that subscription intervals are delivered to (None: no subscriptions served).
    manager: ManagerTarget | None = None

    def target(self, jobs: list[Job]) -> ChecksumAddress:
        """The contract a transaction of `jobs` calls: the manager for an interval (always alone), else the
        coordinator. Raises ValueError for an interval when no manager is configured."""
        if jobs and jobs[0].subscription is not None:
            if self.manager is None:
                raise ValueError("an interval job without chain.subscription_manager_address")
            return self.manager.address
        return self.coordinator


@dataclass(frozen=True)
class TxBooks:
    """The transaction layer's shared state, one of each part for all units. Frozen: the parts change, never which
    parts they are."""

    keys: KeyPool
    ledger: OpenTxs
    queue: ReadyQueue
    history: JobHistory
    settler: Settler

    @classmethod
    def new(
        cls,
        accounts: list[LocalAccount],
        store: JobStore,
        max_pending_per_key: int,
        *,
        metrics: Metrics | None = None,
        on_settled: Callable[[Job], None] = lambda job: None,
    ) -> TxBooks:
        """Empty books for the keys of `accounts`, settling jobs into `store`."""
        keys = KeyPool(accounts, max_pending_per_key)
        history = JobHistory()
        settler = Settler(store, history, metrics=metrics, on_settled=on_settled)
        return cls(keys, OpenTxs(keys), ReadyQueue(), history, settler)
