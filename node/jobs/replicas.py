"""The node's side of the leader lease (node/jobs/lease.py): a standby waits for it, the leader renews it and steps
down (the process exits, to be restarted as a standby) when it cannot.

Guarantees:
- A standby asks for the lease every `poll_s(ttl)` seconds (at most 1 s), so it takes over at most that long after
  the leader's lease ended (at most `lease_ttl_s` after the leader's last renewal; at once after a clean stop).
- The leader renews every `ttl / 3`; a renewal the database refuses (the lease moved or ended) raises `LeaseLost`
  at once; renewals that fail for want of an answer raise it once `ttl` has passed since the last one that worked
  (the lease has ended by then, whatever the database's clock says). The store's fence stops every write before
  that (node/jobs/lease.py).
- Every database call of the lease runs in a worker thread: the event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aiohttp
import psycopg

from node.dispatch.http import HttpDispatcher
from node.jobs.db import redact_url
from node.jobs.lease import LeaseLost, Replica, elapsed_s
from node.observability.health import CONTAINER_CHECK_S
from node.retry import wait_set

log = logging.getLogger(__name__)


def poll_s(ttl_s: float) -> float:
    """How often a standby asks for the lease, in seconds: a fifth of its TTL, at most 1 s."""
    return min(1.0, ttl_s / 5)


async def containers_down(urls: dict[str, str]) -> list[str]:
    """The models (name → container base URL) whose container is not healthy, judged as the node's health check
    judges it (`HttpDispatcher.healthy`: `GET /health` 200, or no such path), all asked at once."""
    async with aiohttp.ClientSession() as session:
        probes = {name: HttpDispatcher(session, url, timeout_s=5, name=name) for name, url in urls.items()}
        healthy = await asyncio.gather(*(probe.healthy() for probe in probes.values()))
    return [name for name, ok in zip(probes, healthy, strict=True) if not ok]


async def wait_for_lease(
    replica: Replica, stopping: asyncio.Event, say: Callable[[str], None], containers: dict[str, str] | None = None
) -> bool:
    """Waits as a standby until `replica` takes the lease (True) or `stopping` is set (False), keeping warm: the
    chain connection is open, and the `containers` (model name → base URL) are asked for their health every
    `CONTAINER_CHECK_S` seconds, so a standby that could not serve says so before it has to. `say` gets the line
    `/readyz` shows meanwhile (who leads, until when, which containers do not answer; or that the database does not
    answer)."""
    lease = replica.lease
    assert lease is not None
    where = redact_url(lease.url)
    said = ""
    down: list[str] = []
    down_before: list[str] = []
    probed_at = elapsed_s() - CONTAINER_CHECK_S
    while not stopping.is_set():
        if elapsed_s() - probed_at >= CONTAINER_CHECK_S:  # as often as the leader's health check, not every ask
            probed_at = elapsed_s()
            down = await containers_down(containers or {})
        if down != down_before:
            if down:
                log.warning(
                    "replica %s: standby, and the container of %s does not answer", replica.name, ", ".join(down)
                )
            down_before = down
        warm = (
            f"; the container of {', '.join(down)} does not answer: fix it before this replica has to serve"
            if down
            else ""
        )
        try:
            if await asyncio.to_thread(lease.try_acquire):
                replica.role, replica.error = "leader", None
                log.info("replica %s: leader (lease epoch %s, %s)", replica.name, lease.epoch, where)
                with contextlib.suppress(psycopg.Error):  # only for /status: the next renewal reads it again
                    replica.state = await asyncio.to_thread(lease.read)
                return True
            replica.state, replica.error = await asyncio.to_thread(lease.read), None
            holder = replica.state.holder if replica.state else "?"
            ends = replica.state.expires_at.isoformat() if replica.state else "?"
            line = f"standby: replica {holder} leads (its lease ends {ends} unless renewed){warm}"
            if not said.startswith(f"standby: replica {holder} "):
                log.info("replica %s: standby; %s leads", replica.name, holder)
        except psycopg.Error as exc:
            replica.error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            line = f"standby: the store's database {where} does not answer ({replica.error}); asking again{warm}"
            if not said.startswith("standby: the store's database"):
                log.error("replica %s: %s", replica.name, line)
        said = line
        say(line)
        await wait_set(stopping, poll_s(lease.ttl_s))
    return False


async def keep_lease(replica: Replica) -> None:
    """The leader's renewals, until cancelled; raises `LeaseLost` when the lease is gone (see the module)."""
    lease = replica.lease
    assert lease is not None
    renewed = elapsed_s()
    every = lease.ttl_s / 3
    wait = every
    while True:
        await asyncio.sleep(wait)
        try:
            await asyncio.to_thread(lease.renew)
            renewed, wait, replica.error = elapsed_s(), every, None
            replica.state = await asyncio.to_thread(lease.read)
        except LeaseLost:
            replica.role = "standby"
            log.error(
                "replica %s: lost the leader lease; stopping (restart it: it comes back as a standby)", replica.name
            )
            raise
        except psycopg.Error as exc:
            replica.error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            left = lease.ttl_s - (elapsed_s() - renewed)
            if left <= 0:
                replica.role, lease.epoch = "standby", None
                raise LeaseLost(
                    f"could not renew the leader lease for {lease.ttl_s:.0f} s (the store's database"
                    f" {redact_url(lease.url)} does not answer: {replica.error}); stopping: restart the node, it"
                    " comes back as a standby"
                ) from None
            log.error("replica %s: cannot renew the lease (%s); %.1f s left", replica.name, replica.error, left)
            wait = min(1.0, max(left, 0.05))


async def release_lease(replica: Replica) -> None:
    """Ends this replica's lease (a clean stop, after its last write) and closes the lease's connection; a database
    that does not answer is only logged (the lease then ends by itself)."""
    lease = replica.lease
    if lease is None:
        return
    try:
        if lease.epoch is not None:
            await asyncio.to_thread(lease.release)
            log.info("replica %s: lease released", replica.name)
    except psycopg.Error as exc:
        log.error("replica %s: could not release the lease (%s); it ends by itself", replica.name, exc)
    finally:
        replica.role = "standby"
        await asyncio.to_thread(lease.close)
