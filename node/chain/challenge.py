"""Challenges other nodes' optimistic deliveries for the models this node serves (`[chain] challenge = true`).

An optimistic verifier (`ReexecutionVerifier`) holds a delivery (`VerificationPending`) while active staked nodes may
dispute it. The `Challenger` reads those events from the coordinator's logs as the chain grows (starting
`FIRST_LOOKBACK_BLOCKS` below the first head it sees, never before the config's `start_block`: a restart re-judges
only what may still be in its challenge window), and for each delivery by another node, to a request naming one of the
`optimistic` verifiers in `[chain] verifiers`, for a model this node serves, re-runs the request's input in the
model's container (through its `ModelRoute`: same concurrency and retry policy as the node's own jobs). When its
output hash differs from the delivered one, it sends `dispute(requestId, node, ourOutputHash)` to the verifier: the
first vote against; a quorum of votes rejects the delivery and slashes the node to the challenger.

Guarantees: each (request, node) is judged at most once per run; a dispute is simulated from the node's first key
first (a closed window, an existing dispute, a request the verifier does not know cost no gas) and sent through
`TxManager.send_call(to=verifier)` (stored before broadcast, nonces, fee cap, replacement); a container failure or a
round that fails (RPC down) is logged and never stops the node. What it costs: one container call per delivery
judged, and one transaction per dispute (the slashed stake pays the challenger when the quorum agrees; a dispute the
quorum rejects costs only its gas).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from eth_abi.abi import encode
from eth_utils.crypto import keccak

from node.chain.contracts import CoordinatorAbi, as_bytes, as_int, signature
from node.chain.rpc import RpcPool
from node.dispatch.pipeline import Route
from node.errors import ContainerError
from node.jobs.store import JobStore
from node.retry import every

if TYPE_CHECKING:
    from node.chain.tx import TxManager

log = logging.getLogger(__name__)

#: Seconds between rounds (a challenge window is minutes long).
EVERY_S = 5.0
#: Gas limit of a `dispute` (a claim update, a vote, and at quorum the coordinator's verdict and a slash), generously.
DISPUTE_GAS = 400_000
#: Blocks read per `eth_getLogs`.
MAX_RANGE = 2_000
#: How far below the first head seen the first round reads (about 3 hours of 12-second blocks: longer than a
#: challenge window).
FIRST_LOOKBACK_BLOCKS = 1_000


class Challenger:
    """Disputes other nodes' optimistic deliveries whose output this node's model does not reproduce (see the
    module)."""

    def __init__(
        self,
        rpc: RpcPool,
        abi: CoordinatorAbi,
        coordinator: str,
        verifier_abi: list[dict[str, Any]],
        optimistic: list[str],
        routes: Mapping[bytes, Route],
        txm: TxManager,
        *,
        start_block: int = 0,
        store: JobStore | None = None,
    ) -> None:
        """`verifier_abi`: the ReexecutionVerifier's ABI; `optimistic`: the checksummed addresses of the verifiers
        whose deliveries are judged; `routes`: the served models' routes, by model id; `start_block`: the earliest
        block a request may have been made in (the config's); `store`: the node's job store, where the listener
        recorded the requests of the served models (read first, so no `eth_getLogs` over a long range is needed)."""
        self._store = store
        self._rpc = rpc
        self._abi = abi
        self._coordinator = coordinator
        self._optimistic = {a.lower() for a in optimistic}
        self._routes = routes
        self._txm = txm
        self._start_block = start_block
        dispute = next(e for e in verifier_abi if e.get("type") == "function" and e["name"] == "dispute")
        self._dispute_selector = keccak(text=signature(dispute))[:4]
        self._judged: set[tuple[int, str]] = set()
        self._next_block: int | None = None
        #: Deliveries judged, and disputes sent, since start.
        self.judged = 0
        self.disputed = 0

    async def run(self, every_s: float = EVERY_S) -> None:
        """Checks every `every_s` seconds, until cancelled."""
        await every(every_s, self.round, "check other nodes' deliveries for a challenge", log)

    async def round(self) -> int:
        """Reads the `VerificationPending` logs since the last round and judges each; returns the disputes sent."""
        head = self._txm.head
        if head is None or not self._txm.addresses:
            return 0
        if self._next_block is None:
            self._next_block = max(self._start_block, head.number - FIRST_LOOKBACK_BLOCKS)
        sent = 0
        while self._next_block <= head.number:
            to_block = min(head.number, self._next_block + MAX_RANGE - 1)
            logs = await self._logs([self._abi.topic("VerificationPending")], self._next_block, to_block)
            for raw in logs:
                if await self._judge(raw):
                    sent += 1
            self._next_block = to_block + 1
        return sent

    async def _logs(self, topics: list[Any], from_block: int, to_block: int) -> list[Any]:
        query = {"address": self._coordinator, "fromBlock": hex(from_block), "toBlock": hex(to_block)}
        logs: list[Any] = await self._rpc.request("eth_getLogs", [{**query, "topics": topics}])
        return logs

    async def _judge(self, raw: Any) -> bool:
        topics = raw["topics"]
        rid, node = int(topics[1], 16), "0x" + as_bytes(topics[2])[12:].hex()
        if node.lower() in {a.lower() for a in self._txm.addresses} or (rid, node) in self._judged:
            return False
        fields = self._abi.event_fields("VerificationPending", [raw], node, self._coordinator).get(rid)
        job = self._store.get(rid) if self._store is not None else None
        if job is not None:
            request = job.request
        else:  # not recorded here (a model this node does not serve, or pruned): the coordinator's log
            created = await self._logs(
                [self._abi.request_created_topic, "0x" + rid.to_bytes(32, "big").hex()],
                self._start_block,
                as_int(raw["blockNumber"]),
            )
            if not created:
                return False
            request = self._abi.decode_request_created(created[0])
        self._judged.add((rid, node))  # after the look-up: one that failed is judged again next round
        if fields is None:
            return False
        route = self._routes.get(request.model_id)
        if route is None or request.verifier.lower() not in self._optimistic:
            return False
        self.judged += 1
        try:
            ours = await route.call(f"challenge-{rid}", request.input, deadline=float(fields["verdictBy"]))
        except ContainerError as exc:
            log.warning("request %d: could not re-run %s to judge %s's delivery: %s", rid, route.model.name, node, exc)
            return False
        our_hash = keccak(ours.output)
        if our_hash == bytes(fields["outputHash"]):
            log.info("request %d: %s's held delivery matches this node's output", rid, node)
            return False
        return await self._dispute(rid, node, our_hash, request.verifier)

    async def _dispute(self, rid: int, node: str, our_hash: bytes, verifier: str) -> bool:
        data = self._dispute_selector + encode(["uint256", "address", "bytes32"], [rid, node, our_hash])
        sender = self._txm.addresses[0]
        refused = await self._txm.simulate(sender, data, DISPUTE_GAS, f"dispute of request {rid}", to=verifier)
        if refused is not None:
            log.info("request %d: not disputing %s's delivery: the verifier refuses it (%s)", rid, node, refused)
            return False
        tx, _ = await self._txm.send_call(
            data, DISPUTE_GAS, f"dispute of request {rid} ({node})", sender=sender, to=verifier
        )
        self.disputed += 1
        said = "request %d: %s's held delivery differs from this node's output; sent dispute tx %s"
        log.warning(said, rid, node, tx.hashes[-1])
        return True
