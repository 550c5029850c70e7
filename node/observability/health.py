"""What the node knows about its own health, for `/healthz`, `/readyz` and the logs.

Ready means it can serve a request now and be paid for it. Each part is a named check (`CHECKS`), failing with one
line per problem that says what to do:
- `rpc`: the RPC answers;
- `listener`: the listener is connected, not trailing the confirmed head by more than `max_lag_blocks`, nor silent
  for `max_silence_s`;
- `containers`: every served model's container (or worker pool) answers its health probe;
- `coordinator`: `chain.coordinator_address` holds a Coordinator of a supported version (checked at start: the node
  refuses to run otherwise, node/chain/standing.py);
- `stake`: every node key is registered, active and staked at the registry's minimum;
- `balance`: every key's balance pays for `api.min_deliveries_covered` deliveries at the current gas price;
- `conditions`: no blocking condition (a stale endpoint, a key that cannot send, ...).
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
from node.chain.standing import Standing, iso_utc
from node.observability.conditions import CONDITIONS

log = logging.getLogger(__name__)

CONTAINER_CHECK_S = 5.0
#: The readiness checks, in the order `/readyz`, `/status` and `infera_readiness_check` list them.
CHECKS = ("rpc", "listener", "containers", "coordinator", "stake", "balance", "conditions")


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
    #: model name → where its container is (a URL, the MQTT pool, a pipeline), named when it is down.
    where: dict[str, str] = field(default_factory=dict)
    #: The node's standing on-chain (None: the `coordinator`, `stake` and `balance` checks pass unread).
    standing: Standing | None = None
    #: Unix time the container of each model went down (absent while healthy).
    down_since: dict[str, float] = field(default_factory=dict)

    async def watch_containers(self) -> None:
        """Probes every container every few seconds until cancelled; logs each change."""
        while True:
            results = await asyncio.gather(*(probe() for probe in self.probes.values()), return_exceptions=True)
            for name, ok in zip(self.probes, results, strict=True):
                healthy = ok is True
                if self.containers.get(name) != healthy:
                    say = log.info if healthy else log.warning
                    say("container of %s (%s) is %s", name, self.where.get(name, "?"), "healthy" if healthy else "DOWN")
                    if healthy:
                        self.down_since.pop(name, None)
                    else:
                        self.down_since.setdefault(name, time.time())
                self.containers[name] = healthy
            await asyncio.sleep(CONTAINER_CHECK_S)

    def checks(self) -> dict[str, list[str]]:
        """Each check of `CHECKS` → its problems now, one line each (empty: it passes)."""
        found: dict[str, list[str]] = {name: [] for name in CHECKS}
        if not self.rpc.reachable:
            found["rpc"].append(f"RPC unreachable ({public_url(self.rpc.url)})")
        if not self.listener.connected:
            found["listener"].append("listener not connected")
        elif time.monotonic() - self.listener.last_heard > self.max_silence_s:
            found["listener"].append(f"no block heard for more than {self.max_silence_s:.0f} s")
        if self.listener.lag_blocks > self.max_lag_blocks:
            found["listener"].append(
                f"listener {self.listener.lag_blocks} blocks behind the confirmed head (api.max_lag_blocks ="
                f" {self.max_lag_blocks})"
            )
        for name in self.probes:
            healthy = self.containers.get(name)
            if healthy is None:
                found["containers"].append(f"container of {name} ({self.where.get(name, '?')}) not probed yet")
            elif not healthy:
                since = self.down_since.get(name)
                when = f" since {iso_utc(since)}" if since else ""
                found["containers"].append(
                    f"container of {name} at {self.where.get(name, '?')} is down{when}: its requests wait; start it"
                    " or check its logs"
                )
        if not self.probes:
            found["containers"].append("no model is served")
        if self.standing is not None:
            if self.standing.type_and_version is None:
                found["coordinator"].append("the coordinator's identity is not checked yet")
            for check, lines in self.standing.problems().items():
                found[check].extend(lines)
        found["conditions"].extend(CONDITIONS.problems(blocking_only=True))  # stale endpoints, keys that cannot send
        return found

    def problems(self) -> list[str]:
        """Why the node is not ready, one line each across every check; empty when it is."""
        return [line for lines in self.checks().values() for line in lines]

    def snapshot(self) -> dict[str, Any]:
        """The `/readyz` body: `ready` (bool), `problems` (what blocks readiness, one line each), `checks` (each of
        `CHECKS` → `ok` and its `problems`), `head` and
        `cursor` (block numbers; head None before the first one), `lag_blocks`, `rpc` (the current endpoint, without
        credentials), `containers` (model name → healthy at the last probe) and `conditions` (every current one,
        blocking or not, as `"subject: problem"`)."""
        head = self.listener.head
        checks = self.checks()
        problems = [line for lines in checks.values() for line in lines]
        return {
            "ready": not problems,
            "problems": problems,
            "checks": {name: {"ok": not lines, "problems": lines} for name, lines in checks.items()},
            "head": head.number if head else None,
            "cursor": self.listener.cursor,
            "lag_blocks": self.listener.lag_blocks,
            "rpc": public_url(self.rpc.url),
            "containers": dict(self.containers),
            "conditions": CONDITIONS.problems(),
        }
