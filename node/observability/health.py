"""What the node knows about its own health, for `/healthz`, `/readyz` and the logs.

Ready means it can serve a request now: the RPC answers, the listener is connected and not trailing the head by more
than `max_lag_blocks` (nor silent for `max_silence_s`), and at least one model container is healthy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from node.chain.listener import Listener
from node.chain.rpc import RpcPool, public_url
from node.observability.conditions import CONDITIONS

log = logging.getLogger(__name__)

CONTAINER_CHECK_S = 5.0


@dataclass
class Health:
    """Readiness (`/readyz`) from the RPC, the listener's lag and silence, the containers' probes and the current
    conditions."""

    rpc: RpcPool
    listener: Listener
    #: model name → an async probe that says whether its container (or worker pool) can take jobs.
    probes: dict[str, Callable[[], Awaitable[bool]]]
    max_lag_blocks: int
    max_silence_s: float
    containers: dict[str, bool] = field(default_factory=dict)

    async def watch_containers(self) -> None:
        """Probes every container every few seconds until cancelled; logs each change."""
        while True:
            results = await asyncio.gather(*(probe() for probe in self.probes.values()), return_exceptions=True)
            for name, ok in zip(self.probes, results, strict=True):
                healthy = ok is True
                if self.containers.get(name) != healthy:
                    say = log.info if healthy else log.warning
                    say("container of %s is %s", name, "healthy" if healthy else "DOWN")
                self.containers[name] = healthy
            await asyncio.sleep(CONTAINER_CHECK_S)

    def problems(self) -> list[str]:
        """Why the node is not ready; empty when it is."""
        found = []
        if not self.rpc.reachable:
            found.append(f"RPC unreachable ({public_url(self.rpc.url)})")
        if not self.listener.connected:
            found.append("listener not connected")
        elif time.monotonic() - self.listener.last_heard > self.max_silence_s:
            found.append(f"no block heard for more than {self.max_silence_s:.0f} s")
        if self.listener.lag_blocks > self.max_lag_blocks:
            found.append(f"listener {self.listener.lag_blocks} blocks behind the head")
        if not any(self.containers.values()):
            found.append("no healthy model container")
        found.extend(CONDITIONS.problems(blocking_only=True))  # stale endpoints, keys that cannot send, ...
        return found

    def snapshot(self) -> dict[str, Any]:
        """The `/readyz` body: `ready` (bool), `problems` (what blocks readiness, one line each), `head` and
        `cursor` (block numbers; head None before the first one), `lag_blocks`, `rpc` (the current endpoint, without
        credentials), `containers` (model name → healthy at the last probe) and `conditions` (every current one,
        blocking or not, as `"subject: problem"`)."""
        head = self.listener.head
        return {
            "ready": not self.problems(),
            "problems": self.problems(),
            "head": head.number if head else None,
            "cursor": self.listener.cursor,
            "lag_blocks": self.listener.lag_blocks,
            "rpc": public_url(self.rpc.url),
            "containers": dict(self.containers),
            "conditions": CONDITIONS.problems(),
        }
