"""`infera jobs`: the node's jobs, read from its SQLite store; `retry` puts a failed one back.

Guarantees: `retry` never touches a job that was delivered, is in flight or is still being worked on, nor one whose
request the coordinator no longer accepts from this node (checked on-chain unless told not to); the state is
re-checked inside the store's write, so a job a running node settles meanwhile is never overwritten.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from node.commands import CONFIG, load_config_file, node_running, open_chain
from node.commands.console import fail, note
from node.errors import ConfigError
from node.jobs.intervals import MAX_INTERVAL

if TYPE_CHECKING:
    from node.config import NodeConfig
    from node.jobs.store import JobRecord, JobStore

#: The largest id the store holds (SQLite's integers are 64-bit): a larger one is refused as an argument.
_MAX_ID = 2**63 - 1

jobs_app = typer.Typer(no_args_is_help=True, help="The node's jobs, from its job store (SQLite or PostgreSQL).")


def _open_store(cfg: NodeConfig, chain_id: int | None) -> JobStore:
    """The node's store for the config's coordinator; the chain id is read from the store (no RPC needed)."""
    from node.jobs.db import redact_url
    from node.jobs.store import JobStore

    path = cfg.store.location  # a PostgreSQL store (store.url) is opened as it is: the database must be reachable
    if cfg.store.url is None and not cfg.store.path.exists():
        raise ConfigError(f"store.path: no job store at {path}: has the node run with this config yet?")
    coordinator, manager = cfg.chain.coordinator_address, cfg.chain.subscription_manager_address
    if chain_id is None:
        ours = {coordinator.lower(), (manager or coordinator).lower()}
        chains = sorted({c for c, a in JobStore.scopes(path) if a in ours})
        if len(chains) > 1:
            raise ConfigError(f"{redact_url(path)} holds jobs of chains {chains} for this coordinator: pass --chain-id")
        chain_id = chains[0] if chains else 0
    return JobStore(path, chain_id=chain_id, coordinator=coordinator, subscription_manager=manager)


def _job_dict(record: JobRecord, store: JobStore) -> dict[str, Any]:
    from node.jobs.outcomes import Outcomes

    job, r = record.job, record.job.request
    interval = job.subscription
    return {
        "request_id": job.request_id if interval is None else None,
        **({} if interval is None else {"subscription_id": interval[0], "interval": interval[1]}),
        "state": str(job.state),
        "model": job.model_name,
        "attempts": job.attempts,
        "consumer": r.consumer,
        "input_hex": "0x" + r.input.hex(),
        "output_hex": None if job.output is None else "0x" + job.output.hex(),
        "failure": job.failure,
        "error": job.error,
        "tx_hash": job.tx_hash,
        "nonce": job.nonce,
        "token": r.token,
        "fee_per_node_wei": str(r.fee_per_node_wei),
        "deadline": r.deadline,
        "block_number": record.block_number,
        "request_tx": r.tx_hash,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        **Outcomes(store).get(job.request_id).as_dict(),
    }


@jobs_app.command("list")
def jobs_list(
    config: Path = CONFIG,
    state: str | None = typer.Option(None, help="only jobs in this state (seen, running, computed, submitted, …)"),
    limit: int = typer.Option(50, min=1, help="most recent jobs to show"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    chain_id: int | None = typer.Option(None, "--chain-id", help="when the store holds several chains"),
) -> None:
    """The node's most recent jobs (by last change); a subscription interval shows as sSUB/iN (interval N of
    subscription SUB)."""
    from node.jobs.outcomes import Outcomes
    from node.jobs.states import JobState

    try:
        wanted = JobState(state) if state is not None else None
    except ValueError:
        raise ConfigError(f"--state: {state!r} is not one of {', '.join(s.value for s in JobState)}") from None
    store = _open_store(load_config_file(config), chain_id)
    records = store.list_jobs(state=wanted, limit=limit)
    if as_json:
        typer.echo(json.dumps([_job_dict(r, store) for r in records], indent=2))
        return
    if not records:
        note("no jobs" + (f" in state {state}" if state else ""))
        return
    from node.chain.reverts import escape_text
    from node.commands.chain_ops import utc

    typer.echo(f"{'REQUEST':>8}  {'STATE':<9}  {'MODEL':<24}  {'TRIES':>5}  {'UPDATED':<23}  DETAIL")
    for r in records:
        detail = r.job.error or r.job.tx_hash or ""
        outcome = Outcomes(store).get(r.job.request_id)
        if outcome.callback_ok is not None:
            detail += f" callbackOk={str(outcome.callback_ok).lower()}"
        if outcome.fee_earned is not None:
            detail += f" fee={outcome.fee_earned}"
        for extra in (outcome.verification, outcome.reclaim and f"reclaim {outcome.reclaim}"):
            if extra:
                detail += f" {extra}"
        interval = r.job.subscription
        which = str(r.job.request_id) if interval is None else f"s{interval[0]}/i{interval[1]}"
        typer.echo(  # the model name and the error can come from a requester: escaped
            f"{which:>8}  {r.job.state:<9}  {escape_text(r.job.model_name):<24}  {r.job.attempts:>5}  "
            f"{utc(int(r.updated_at)):<23}  {escape_text(detail)}"
        )


def _iso(timestamp: float | None) -> str | None:
    """A Unix time in seconds as ISO-8601 UTC (`2026-01-31T12:00:00Z`); None stays None."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _amount(units: int, token: str) -> str:
    """`units` of the request's `token` with its unit: `0.001 ETH (1000000000000000 wei)` for ETH; an ERC-20 token's
    decimals are not in the store, so its amount is in its smallest units, naming the token."""
    from node.commands.chain_ops import eth
    from node.config import ETH_TOKEN

    if token.lower() == ETH_TOKEN:
        return f"{eth(units)} ({units} wei)"
    return f"{units} smallest units of token {token}"


def _decoded(cfg: NodeConfig, record: JobRecord) -> dict[str, Any]:
    """The job's input and output decoded with its model's ABI, as the model's container declares it (`GET /info`):
    `input`, `output` (None while there is none), `input_decoded` / `output_decoded` (False: the value is the 0x-hex
    of bytes that did not decode) and `decoded` (how, or why not, per field); when the container cannot be asked,
    only `decoded`, saying why."""
    from node.commands.chain_ops import OpsError
    from node.commands.request_inference import model_codec

    job = record.job
    model = cfg.model(job.model_name)
    if model is None:
        return {"decoded": f"no: model {job.model_name!r} is not in this config, so its ABI is not known"}
    try:
        codec = model_codec(cfg.stages(model), timeout_s=3)
    except OpsError as exc:
        return {"decoded": f"no: {exc}, so its ABI is not known"}
    input_, input_why = codec.read_input(job.request.input)
    output, output_why = (None, None) if job.output is None else codec.read_output(job.output)
    where = f"the {model.name!r} container ({model.url if model.url else 'MQTT'})"
    notes = [f"{name} {why}: shown as hex" for name, why in (("input", input_why), ("output", output_why)) if why]
    return {
        "input": input_,
        "output": output,
        "input_decoded": input_why is None,
        "output_decoded": None if job.output is None else output_why is None,
        "decoded": "; ".join(notes) + f" (ABI from {where})" if notes else f"with the ABI {where} declares",
    }


def _show_value(value: Any) -> str:
    """`value` as one line a terminal shows as it is: strings (a requester's bytes, decoded) with their control and
    format characters escaped (`\\n`, `\\x1b`), so they can neither forge lines nor drive the terminal."""
    from node.chain.reverts import escape_text

    if isinstance(value, str):
        return escape_text(value)
    shown = json.dumps(value, ensure_ascii=False)  # JSON escapes C0 controls; DEL, C1 and format characters remain
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in shown)


@jobs_app.command("show")
def jobs_show(
    request_id: int = typer.Argument(..., min=0, max=_MAX_ID, help="request id (with --interval: subscription id)"),
    config: Path = CONFIG,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    chain_id: int | None = typer.Option(None, "--chain-id", help="when the store holds several chains"),
    interval: int | None = typer.Option(
        None, "--interval", min=0, max=MAX_INTERVAL, help="this interval of subscription REQUEST_ID"
    ),
) -> None:
    """One job: its request, state, attempts, output, transaction and outcome (`--interval N`: interval N of a
    subscription)."""
    from node.jobs.intervals import describe_job, interval_job_id

    job_id = request_id if interval is None else interval_job_id(request_id, interval)
    cfg = load_config_file(config)
    store = _open_store(cfg, chain_id)
    record = store.record(job_id)
    if record is None:
        raise ConfigError(f"no job for {describe_job(job_id)} in this node's store")
    body = _job_dict(record, store)
    decoded = _decoded(cfg, record)
    token = record.job.request.token
    earned = body["fee_earned"]
    readable = {
        **decoded,
        "fee_per_node": _amount(record.job.request.fee_per_node_wei, token),
        "fee_earned_amount": None if earned is None else _amount(int(earned), token),
        "deadline_utc": _iso(body["deadline"]),
        "created_at_utc": _iso(body["created_at"]),
        "updated_at_utc": _iso(body["updated_at"]),
    }
    if as_json:  # the raw fields as they were, the readable ones beside them
        typer.echo(json.dumps({**body, **readable}, indent=2))
        return
    # For a person: each raw field under its name, or replaced by its readable form; the hex only when the values
    # could not be decoded.
    replaced: dict[str, tuple[str, Any]] = {
        "deadline": ("deadline", readable["deadline_utc"]),
        "created_at": ("created", readable["created_at_utc"]),
        "updated_at": ("updated", readable["updated_at_utc"]),
        "fee_per_node_wei": ("fee_per_node", readable["fee_per_node"]),
        "fee_earned": ("fee_earned", readable["fee_earned_amount"]),
    }
    if decoded.get("input_decoded"):
        replaced["input_hex"] = ("input", decoded["input"])
    if decoded.get("output_decoded"):
        replaced["output_hex"] = ("output", decoded["output"])
    for key, value in body.items():
        name, value = replaced.get(key, (key, value))
        if value is not None:
            typer.echo(f"{name:<17} {_show_value(value)}")
    typer.echo(f"{'decoded':<17} {_show_value(decoded['decoded'])}")


#: Why a job in each state cannot be retried.
_NOT_RETRYABLE = {
    "confirmed": "it was delivered on-chain (tx {tx}); there is nothing to retry",
    "submitted": "it is in flight in tx {tx}: the node is following that transaction; wait for its receipt",
    "seen": "it is still being worked on (state {state}); the node resumes it by itself",
    "running": "it is still being worked on (state {state}); the node resumes it by itself",
    "computed": "it is still being worked on (state {state}); the node resumes it by itself",
    "expired": "it expired ({error}); the coordinator no longer accepts a delivery for it",
    "orphaned": "a reorg removed its request; if the request is mined again the node takes it up by itself",
}


@jobs_app.command("retry")
def jobs_retry(
    request_id: int = typer.Argument(..., min=0, max=_MAX_ID, help="request id of a failed job"),
    config: Path = CONFIG,
    no_chain_check: bool = typer.Option(
        False, "--no-chain-check", help="skip asking the coordinator whether the request is still open"
    ),
    chain_id: int | None = typer.Option(None, "--chain-id", help="when the store holds several chains"),
) -> None:
    """Put a failed job (or one the fee policy skipped, after changing the policy) back, so the node delivers it when
    it next starts. Refused for jobs that were delivered,
    are in flight, or whose request the coordinator no longer takes."""
    cfg = load_config_file(config)
    store = _open_store(cfg, chain_id)
    record = store.record(request_id)
    if record is None:
        raise ConfigError(f"no job for request {request_id} in this node's store")
    job = record.job
    if job.state not in ("failed", "skipped"):
        why = _NOT_RETRYABLE[str(job.state)].format(tx=job.tx_hash, state=job.state, error=job.error)
        fail(f"job {request_id} not retried: {why}")
    if not no_chain_check:
        _check_still_open(cfg, store, request_id)
    new_state = store.requeue(request_id)
    typer.echo(f"job {request_id}: {job.state} -> {new_state}")
    if node_running(cfg):
        note("a node is running with this config: restart it (it takes up unfinished jobs when it starts)")
    else:
        note("the node takes it up when it next starts (`infera run` resumes unfinished jobs)")


def _check_still_open(cfg: NodeConfig, store: JobStore, request_id: int) -> None:
    """Refuses (exit 1) unless the coordinator still accepts this node's answer to `request_id`."""
    from node.commands import chain_ops

    try:
        c = open_chain(cfg)
    except chain_ops.OpsError as exc:
        raise chain_ops.OpsError(
            f"{exc}; pass --no-chain-check to retry without checking the request on-chain"
        ) from None
    view = c.coordinator.functions.getRequest(request_id).call()
    status, deadline = int(view[7]), int(view[1])
    names = ["unknown", "open", "fulfilled", "failed", "reclaimed", "cancelled"]
    if status == 0:
        fail(f"job {request_id} not retried: the coordinator does not know request {request_id} (another chain?)")
    if status != 1:
        fail(f"job {request_id} not retried: the request is {names[status]} on-chain; there is nothing to deliver")
    if deadline <= chain_ops.chain_now(c.w3):
        fail(f"job {request_id} not retried: its deadline passed at {chain_ops.utc(deadline)}")
    for sender in store.senders():
        if c.coordinator.functions.served(request_id, sender).call():
            fail(
                f"job {request_id} not retried: node {sender} already acted on it on-chain (delivered or reported "
                "a failure), and the coordinator lets each node act once per request"
            )
