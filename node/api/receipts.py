"""Run receipts: a signed record of what this node computed for a request, that anyone can fetch and check.

`GET /receipts/{request_id}` (public, like `/info`: it holds hashes, never inputs or outputs) answers JSON:

    {"receipt": {"chain_id": 31337, "coordinator": "0x…", "request_id": "7", "node": "0x…",
                 "model": "classify/minilm-sentiment@1", "model_id": "0x…", "model_digest": "0x…" | null,
                 "input_hash": "0x…", "output_hash": "0x…" | null, "state": "confirmed",
                 "verification": "agreed" | null, "tx_hash": "0x…" | null,
                 "seen_at": 1764900000.123, "updated_at": 1764900001.456},
     "signature": "0x…"}

- `input_hash`, `output_hash`: keccak256 of the request's input bytes and of the output bytes the node delivered (or
  revealed, for a consensus request): the same hashes as `RequestCreated`'s input and as `RequestFulfilled` /
  `Revealed` `outputHash` on-chain. A consensus request's `output_hash` is null until the node has revealed (or the
  request closed): during the commit phase it would tell other nodes the answer.
- `model_digest`: the weights digest the model's container reported at start (node/chain/provenance.py), the one the
  node committed in the NodeRegistry and that `Revealed` names.
- `seen_at`, `updated_at`: unix seconds (the node's clock) when the node recorded the request and when its job last
  changed state.
- `signature`: the node's key's EIP-191 `personal_sign` of `canonical(receipt)` (JSON, keys sorted, no spaces, UTF-8):
  `eth_account.Account.recover_message(encode_defunct(text=canonical(receipt)), signature=…)` gives `node`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from node.api.auth import json_error
from node.chain.commitments import AGREED, DISSENTED, LATE, NO_QUORUM, REVEALED, module_address
from node.chain.contracts import model_id
from node.jobs.outcomes import Outcomes
from node.jobs.store import JobStore

_DECIMAL = re.compile(r"[0-9]{1,78}")  # a uint256 has at most 78 decimal digits
RECEIPTS: web.AppKey[Callable[[int], dict[str, Any] | None]] = web.AppKey("receipts", object)  # type: ignore[arg-type]


def canonical(receipt: Mapping[str, Any]) -> str:
    """The text a receipt's signature signs: its JSON with keys sorted and no spaces."""
    return json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def build_receipt(store: JobStore, request_id: int, node: str, digests: Mapping[str, bytes]) -> dict[str, Any] | None:
    """The unsigned receipt of request `request_id` from the store (None when the node has no job for it);
    `digests`: the weights digest of each model (name -> 32 bytes) found at start."""
    rows = store.execute(
        "SELECT model, request, output, state, tx_hash, created_at, updated_at FROM jobs"
        " WHERE chain_id=? AND coordinator=? AND request_id=? AND interval=0",
        (store.chain_id, store.coordinator, str(request_id)),
    )
    if not rows:
        return None
    model, request, output, state, tx_hash, created_at, updated_at = rows[0]
    fields = json.loads(request)
    input_hex = fields.get("input", "")
    digest = digests.get(model)
    verification = Outcomes(store).get(request_id).verification
    if output is not None and _hidden(fields, store.coordinator, verification):
        output = None  # a consensus output stays secret until revealed: its hash would let others copy it
    return {
        "chain_id": store.chain_id,
        "coordinator": store.coordinator,
        "request_id": str(request_id),
        "node": node,
        "model": model,
        "model_id": "0x" + model_id(model).hex(),
        "model_digest": None if digest is None else "0x" + digest.hex(),
        "input_hash": "0x" + keccak(bytes.fromhex(str(input_hex).removeprefix("0x"))).hex(),
        "output_hash": None if output is None else "0x" + keccak(bytes(output)).hex(),
        "state": state,
        "verification": verification,
        "tx_hash": tx_hash,
        "seen_at": round(float(created_at), 3),
        "updated_at": round(float(updated_at), 3),
    }


def _hidden(request: dict[str, Any], coordinator: str, verification: str | None) -> bool:
    """Whether a job's output hash must stay out of its receipt: a consensus request's, until this node revealed it
    or the request closed. Its plain keccak256 would let a node that never computed match it against the few outputs
    a consensus form allows (a label) and commit that: the salt that hides it on-chain would be for nothing."""
    if str(request.get("verifier", "")).lower() != module_address(coordinator).lower():
        return False
    # Shown once revealed, or once the commit phase is surely over (an outcome only a closed request, a passed
    # deadline or an open reveal phase gives); hidden in every other state, including any added later.
    return verification is None or not verification.startswith((REVEALED, AGREED, DISSENTED, LATE, NO_QUORUM))


def signed(receipt: dict[str, Any], account: LocalAccount) -> dict[str, Any]:
    """`{"receipt": receipt, "signature": "0x…"}`: `receipt` signed by `account` (EIP-191 over `canonical`)."""
    signature = account.sign_message(encode_defunct(text=canonical(receipt))).signature
    return {"receipt": receipt, "signature": "0x" + bytes(signature).hex()}


async def get_receipt(request: web.Request) -> web.Response:
    """`GET /receipts/{request_id}`: this node's signed receipt of the request; 404 when it has none, 400 for an id
    that is not a non-negative decimal integer."""
    raw = request.match_info["request_id"]
    if not _DECIMAL.fullmatch(raw):
        return json_error(400, f"request id {raw[:80]!r} is not a decimal request id")
    answer = request.app[RECEIPTS](int(raw))
    if answer is None:
        return json_error(404, f"this node has no job for request {raw}")
    return web.json_response(answer)


def add_routes(app: web.Application, receipts: Callable[[int], dict[str, Any] | None]) -> None:
    """Adds `GET /receipts/{request_id}` to `app`; `receipts(request_id)` answers the signed receipt or None."""
    app[RECEIPTS] = receipts
    app.router.add_get("/receipts/{request_id}", get_receipt)
