"""Model provenance: the weights digest each served model's container reports, committed in the NodeRegistry.

At start, before any job is taken, the node asks each served model's container for `GET /info` `model_digest` (the
digest of its weight files, containers/runtime/server.py) and the registry for the digest this node committed for
that model (`modelDigestOf(node, modelId)`); a container that does not answer yet (or an RPC that does not) is
checked again every few seconds while the node serves, and every model again each `RECHECK_S` (`watch`):
- none committed yet: the node commits the container's (`commitModel(modelId, digest)`, one transaction per model);
- the same: nothing to do;
- another: the node refuses to start, or stops if it found out later (`ProvenanceMismatch`, naming both digests and
  what to do): it would serve, under its committed digest, answers of other weights (a swapped or tampered file).
  It also warns when a container computes in another dtype than float32: its consensus answers would not match
  float32 nodes' (BENCHMARKS.md, "Consensus forms"). An operator who changed the weights on
  purpose commits the new digest with `infera node commit-model` (node/commands/stake.py) and starts again.

What the digest is and is not: the operator's own claim, checked by this node against its own container, so an
honest operator cannot serve swapped weights by mistake; a dishonest node can commit any digest (the honest one
included), so a required digest filters out misconfigured nodes, not liars (coordinator_contract/README.md, threat
model). Receipts name the digest its container reported when last checked.

Consensus requests may require a digest (`ConsensusParams.modelDigest`): only nodes committed to it may commit an
output, and every `Revealed` event names the digest of the node that revealed. Models reached over MQTT (workers on
other machines, each its own container) and pipelines are not checked here: no one container answers for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from node.chain.contracts import CoordinatorAbi, load_artifact, model_id, signature
from node.chain.rpc import RpcPool
from node.config import ModelConfig
from node.errors import ConfigError

if TYPE_CHECKING:
    from node.chain.tx import TxManager

log = logging.getLogger(__name__)

#: Seconds between two asks of a container that does not answer `/info` yet.
INFO_RETRY_S = 2.0
#: Seconds between two checks of every served model's digest (a container restarted with other weights is found).
RECHECK_S = 60.0
#: Gas of a `commitModel` (one new slot and an event: ~50k), generously.
COMMIT_MODEL_GAS = 100_000


class ProvenanceMismatch(ConfigError):
    """A served model's container reports weights other than those this node committed in the registry."""

    echoes_input = False  # it names the two weights digests (64 hex digits each), which the operator needs


@dataclass(frozen=True)
class Digest:
    """One model's digests: what its container reports and what the registry holds for this node (32 bytes each;
    `committed` all zeros when none is)."""

    model: str
    url: str
    reported: bytes
    committed: bytes


async def container_info(session: aiohttp.ClientSession, url: str, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """What a container at `url` answers at `GET /info`: a JSON object, or an empty one when it has no `/info` (an
    Infernet container) or answers something else. Raises `aiohttp.ClientError`/`TimeoutError` when it does not
    answer."""
    async with session.get(url.rstrip("/") + "/info", timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        if resp.status != 200:
            return {}
        try:
            info: Any = json.loads(await resp.read())
        except (ValueError, RecursionError):
            return {}
    return info if isinstance(info, dict) else {}


def reported_digest(info: dict[str, Any], url: str) -> bytes | None:
    """The `model_digest` (32 bytes) in a container's `/info` (`info`, from `url`); None when it reports none (an
    Infernet container, a model without weight files). Raises `ValueError` when it is not 32 bytes of hex."""
    value = info.get("model_digest")
    if value is None:
        return None
    try:
        digest = bytes.fromhex(str(value).removeprefix("0x"))
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"{url}/info: model_digest is {len(digest)} bytes, not 32")
    return digest


class Provenance:
    """Checks (and commits, where none is) the weights digest of each served model at start (see the module)."""

    def __init__(
        self,
        rpc: RpcPool,
        abi: CoordinatorAbi,
        coordinator: str,
        models: Sequence[ModelConfig],
        txm: TxManager,
        session: aiohttp.ClientSession,
        *,
        artifacts_dir: Any = None,
    ) -> None:
        self._rpc = rpc
        self._abi = abi
        self._coordinator = coordinator
        self._models = [m for m in models if m.served and m.pipeline is None and m.transport == "http" and m.url]
        self._txm = txm
        self._session = session
        self._registry = {e["name"]: e for e in load_artifact("NodeRegistry", artifacts_dir).abi if "name" in e}
        #: The weights digest each checked model's container reported (model name -> 32 bytes), for receipts.
        self.digests: dict[str, bytes] = {}
        #: Models whose container did not answer `/info` yet (`watch` checks them).
        self._pending: list[ModelConfig] = []
        #: Models already warned about for their dtype (once per run).
        self._warned: set[str] = set()
        #: The digest commit this run tried for each model (sent, or refused: not tried again until a restart).
        self._committing: dict[str, bytes] = {}
        self._registry_at: str | None = None

    async def check(self) -> list[Digest]:
        """Compares every served HTTP model's reported digest with the committed one, committing it where none is;
        returns what it found. Raises `ProvenanceMismatch` for a digest other than the committed one. A container
        that does not answer now is left to `watch` (the node serves meanwhile: a down container is the health
        check's and the job's business). A registry without digest commits (an older deployment) is passed."""
        if not self._models or "commitModel" not in self._registry:
            return []
        found: list[Digest] = []
        for model in self._models:
            digest = await self._check(model)
            if digest is not None:
                found.append(digest)
        return found

    async def watch(self, every_s: float = INFO_RETRY_S, recheck_s: float = RECHECK_S) -> None:
        """Checks, every `every_s` seconds, the models whose container did not answer yet, and every model again
        every `recheck_s` seconds (a container restarted with other weights); raises `ProvenanceMismatch` (stopping
        the node) when one reports other weights than committed. Runs until cancelled."""
        if not self._models or "commitModel" not in self._registry:
            return
        last = time.monotonic()
        while True:
            await asyncio.sleep(every_s)
            due = time.monotonic() - last >= recheck_s
            for model in list(self._models if due else self._pending):
                await self._check(model, quiet=True)
            if due:
                last = time.monotonic()

    async def _check(self, model: ModelConfig, *, quiet: bool = False) -> Digest | None:
        try:
            info = await container_info(self._session, str(model.url))
        except (aiohttp.ClientError, TimeoutError) as exc:
            if model not in self._pending:
                log.warning(
                    "model %s: %s/info does not answer (%s); its weights digest is checked once it does",
                    model.name,
                    model.url,
                    exc,
                )
                self._pending.append(model)
            return None
        if model in self._pending:
            self._pending.remove(model)
        dtype = info.get("dtype")
        if dtype is not None and dtype != "float32" and model.name not in self._warned:
            self._warned.add(model.name)
            log.warning(
                "model %s: its container computes in %s; consensus requests compare output bytes, and other nodes'"
                " float32 answers will not match these (BENCHMARKS.md, Consensus forms): start it with --dtype"
                " float32 to agree with them",
                model.name,
                dtype,
            )
        try:
            reported = reported_digest(info, str(model.url))
        except ValueError as exc:
            raise ConfigError(f"model {model.name}: {exc}") from None
        if reported is None:
            return None
        node = self._txm.addresses[0]
        try:
            registry = self._registry_at or await self._registry_address()
            self._registry_at = registry
            committed = await self._committed(registry, node, model.name)
        except Exception as exc:  # whatever the RPC answers: the node serves on, the check is tried again
            log.warning("model %s: cannot read its committed digest now (%s); trying again", model.name, exc)
            if model not in self._pending:
                self._pending.append(model)
            return None
        self.digests[model.name] = reported
        if committed == reported:
            if not quiet:
                log.info("model %s: weights digest 0x%s matches this node's commitment", model.name, reported.hex())
        elif committed == bytes(32) and self._committing.get(model.name) == reported:
            pass  # this run sent (or could not send) that commit already: once a run
        elif committed == bytes(32):
            self._committing[model.name] = reported
            try:
                await self._commit(registry, node, model.name, reported)
            except Exception as exc:  # an RPC down, fees over the cap: the digest is committed at the next start
                log.warning(
                    "model %s: could not commit its weights digest (%s); the next start tries again", model.name, exc
                )
        else:
            raise ProvenanceMismatch(
                f"model {model.name}: the container at {model.url} reports weights digest 0x{reported.hex()}, but"
                f" this node committed 0x{committed.hex()} in the NodeRegistry: it serves other weights than it"
                " committed (a swapped or changed weights file?). Put the committed weights back, or, if the"
                f" change is intended, commit the new digest: infera node commit-model --model {model.name}"
            )
        return Digest(model.name, str(model.url), reported, committed)

    def _encode(self, function: str, *args: Any) -> bytes:
        """Calldata of the NodeRegistry's `function` with `args` (from its compiled ABI)."""
        entry = self._registry[function]
        types = [p["type"] for p in entry["inputs"]]
        return keccak(text=signature(entry))[:4] + abi_encode(types, list(args))

    async def _registry_address(self) -> str:
        call = {"to": self._coordinator, "data": "0x" + self._abi.encode_call("registry").hex()}
        raw = await self._rpc.request("eth_call", [call, "latest"])
        (address,) = abi_decode(["address"], bytes.fromhex(raw[2:]))
        return str(to_checksum_address(address))

    async def _committed(self, registry: str, node: str, model: str) -> bytes:
        data = self._encode("modelDigestOf", node, model_id(model))
        raw = await self._rpc.request("eth_call", [{"to": registry, "data": "0x" + data.hex()}, "latest"])
        (digest,) = abi_decode(["bytes32"], bytes.fromhex(raw[2:]))
        return bytes(digest)

    async def _commit(self, registry: str, node: str, model: str, digest: bytes) -> None:
        data = self._encode("commitModel", model_id(model), digest)
        what = f"commitModel of {model}"
        reverted = await self._txm.simulate(node, data, COMMIT_MODEL_GAS, what, to=registry)
        if reverted is not None:
            log.warning(
                "model %s: cannot commit its weights digest 0x%s yet (%s): register and stake the node first"
                " (infera node register); consensus requests that require a digest are not served meanwhile",
                model,
                digest.hex(),
                reverted,
            )
            return
        tx, receipt = await self._txm.send_call(data, COMMIT_MODEL_GAS, what, sender=node, to=registry)
        log.info("model %s: committing weights digest 0x%s (tx %s)", model, digest.hex(), tx.hashes[-1])

        def landed(future: asyncio.Future[Any]) -> None:  # mined once the transaction layer runs
            if future.cancelled():
                return
            exc = future.exception()
            if exc is not None or int(future.result()["status"]) != 1:
                log.error("model %s: commitModel did not go through (%s); restart the node to try again", model, exc)

        receipt.add_done_callback(landed)
