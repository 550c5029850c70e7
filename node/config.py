"""The node's one typed config tree: a TOML file, overridden by `INFERA_…` environment variables.

Guarantees: a config that loads is complete and consistent; a bad one raises `ConfigError` whose message names
every bad key (`chain.rpc_url: ...`). Secrets never live in the file: the key comes from an env var or an
encrypted keystore named here. A pipeline (`[[models]] pipeline = [...]`) names two or more other `[[models]]`
entries that each have a container of their own; nesting, self-reference (a cycle), unknown stages, a container key
or `attests = true` on a pipeline, and a `served = false` entry that no pipeline uses are refused, one line per key.
"""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from eth_utils.address import is_address, to_checksum_address
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from node import config_hints
from node.config_errors import KeyProblems, format_errors, named_variables, settings_error
from node.errors import ConfigError

#: The zero address: the coordinator's token for requests paid in ETH.
ETH_TOKEN = "0x0000000000000000000000000000000000000000"


def _checksum(value: str) -> str:
    """`value` as a checksummed address. All-lower or all-upper hex is taken as is; mixed case must carry a correct
    EIP-55 checksum (a wrong one is a mistyped address)."""
    if not is_address(value):
        raise ValueError(f"not an Ethereum address: {value!r}")
    checksummed = str(to_checksum_address(value))
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and value != checksummed:
        raise ValueError(f"{value}: checksum mismatch: did you mean {checksummed}?")
    return checksummed


def _nonzero(value: str) -> str:
    if int(value, 16) == 0:
        raise ValueError("the zero address cannot be meant here (no contract lives there)")
    return value


Address = Annotated[str, AfterValidator(_checksum)]
#: An address that must name a contract (the coordinator, a verifier): the zero address is refused.
ContractAddress = Annotated[str, AfterValidator(_checksum), AfterValidator(_nonzero)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


HttpUrl = Annotated[str, Field(pattern=r"^https?://")]
WsUrl = Annotated[str, Field(pattern=r"^wss?://")]


class ChainConfig(_Section):
    """`[chain]`: the RPC endpoints, the coordinator, confirmations, fees (wei), batching and the send ceilings."""

    rpc_url: str = Field(pattern=r"^https?://", description="HTTP JSON-RPC endpoint")
    fallback_rpc_urls: list[HttpUrl] = Field(default=[], description="tried in order when rpc_url fails")
    ws_url: str | None = Field(default=None, pattern=r"^wss?://", description="WebSocket endpoint for logs")
    fallback_ws_urls: list[WsUrl] = Field(default=[], description="tried in turn when ws_url fails or goes stale")
    stale_head_min_s: float = Field(
        default=5.0, gt=0, le=3600, description="a silent WebSocket is checked after 5 block times, at least this"
    )
    stale_head_max_s: float = Field(
        default=60.0, gt=0, le=3600, description="... and at most this (also the bound while the block time is unknown)"
    )
    log_reconcile_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="over a WebSocket, the logs are read again with eth_getLogs this often; the cursor moves only then",
    )
    coordinator_address: ContractAddress
    chain_id: int | None = Field(
        default=None, gt=0, description="the chain the node must be on: a mismatch stops it at start (absent: any)"
    )
    subscription_manager_address: ContractAddress | None = Field(
        default=None, description="SubscriptionManager whose subscriptions this node serves (absent: none)"
    )
    start_block: int = Field(default=0, ge=0, description="block to backfill from (the coordinator's deploy)")
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    artifacts_dir: Path | None = None
    max_fee_per_gas_wei: int = Field(default=500 * 10**9, gt=0, description="cap on maxFeePerGas")
    priority_fee_wei: int = Field(default=10**9, ge=0)
    receipt_timeout_s: float = Field(default=120.0, gt=0)
    delivery_retry_window_s: float = Field(default=600.0, ge=0, description="keep retrying a send this long")
    confirmations: int = Field(default=2, ge=0, le=256, description="blocks deep a request must be before it runs")
    bump_after_blocks: int = Field(default=3, ge=1, le=1000, description="replace a tx unmined this many blocks")
    bump_percent: int = Field(default=20, ge=10, le=500, description="fee increase of a replacement (min 10)")
    max_batch: int = Field(default=32, ge=1, le=256, description="deliveries grouped into one deliverBatch")
    max_pending_txs: int = Field(default=64, ge=1, le=4096, description="transactions in flight per key")
    max_sends_per_s: float = Field(
        default=100.0, gt=0, le=10_000, description="transactions one key hands to the RPC per second, at most"
    )
    max_sends_per_block: int = Field(
        default=256, ge=1, le=100_000, description="transactions one key hands to the RPC per block, at most"
    )
    verifiers: dict[ContractAddress, Literal["attestation", "optimistic"]] = Field(
        default={},
        description=(
            "verifier address -> kind (attestation | optimistic): the verified requests this node serves; a request"
            " naming any other verifier is skipped without gas"
        ),
    )
    challenge: bool = Field(
        default=False,
        description=(
            "re-run other nodes' deliveries held by an optimistic verifier (for the models served here) and dispute"
            " those whose output differs"
        ),
    )

    @model_validator(mode="after")
    def _challenge_needs_a_verifier(self) -> ChainConfig:
        if self.challenge and "optimistic" not in self.verifiers.values():
            raise ValueError('challenge = true needs an "optimistic" verifier in verifiers (whose deliveries to judge)')
        return self

    @model_validator(mode="after")
    def _stale_bounds(self) -> ChainConfig:
        if self.stale_head_min_s > self.stale_head_max_s:
            raise ValueError(
                f"stale_head_min_s ({self.stale_head_min_s}) is above stale_head_max_s ({self.stale_head_max_s})"
            )
        return self


def _env_names(value: Any) -> Any:
    """A `*_env` key's value (or list of them), refused when it is shaped like a private key: the key goes *in* the
    variable the config names, never in the config (the value is not echoed)."""
    for name in value if isinstance(value, list) else [value]:
        if isinstance(name, str) and config_hints.looks_like_key(name):
            raise ValueError(
                "this is a private key (not shown), but the config takes the *name* of the environment variable that"
                " holds it: the variable named by private_key_env must hold the key (e.g. INFERA_PRIVATE_KEY=0x…,"
                ' private_key_env = "INFERA_PRIVATE_KEY"); remove it from there (and rotate the key if'
                " that file or environment was shared)"
            )
    return value


EnvName = Annotated[str, BeforeValidator(_env_names)]


class WalletConfig(_Section):
    """`[wallet]`: where the node's keys come from (an env variable or an encrypted keystore); never the key itself.
    A value shaped like a private key in a `*_env` key is refused without being echoed, as is one variable listed
    twice (two nodes' worth of sending from one key in one node)."""

    private_key_env: EnvName | None = Field(default="INFERA_PRIVATE_KEY", description="env var holding the key")
    extra_key_envs: list[EnvName] = Field(default=[], description="env vars of more staked keys, used round-robin")
    keystore_path: Path | None = Field(default=None, description="encrypted keystore (infera keys new|import)")
    keystore_password_env: EnvName | None = Field(default=None, description="env var holding the keystore password")
    keystore_password_file: Path | None = Field(default=None, description="file holding the keystore password")

    @model_validator(mode="after")
    def _one_source(self) -> WalletConfig:
        if self.keystore_path is not None and not (self.keystore_password_env or self.keystore_password_file):
            raise ValueError(
                "keystore_path needs keystore_password_env or keystore_password_file (where its password is)"
            )
        if self.keystore_path is None and not self.private_key_env:
            raise ValueError("set private_key_env or keystore_path")
        return self

    def key_sources(self) -> list[str]:
        """Where each of the node's keys comes from, in order: `keystore PATH` or the env variable's name (the main
        key first, then `extra_key_envs`)."""
        main = f"keystore {self.keystore_path}" if self.keystore_path is not None else str(self.private_key_env)
        return [main, *self.extra_key_envs]

    @model_validator(mode="after")
    def _no_variable_twice(self) -> WalletConfig:
        sources = self.key_sources()
        twice = sorted({s for s in sources if sources.count(s) > 1})
        if twice:
            raise ValueError(
                f"{', '.join(twice)} is listed twice in [wallet] (private_key_env and extra_key_envs): one node sends"
                " from each key once; remove the repeat"
            )
        return self


#: The largest fee per node the Coordinator takes (`FeeTooHigh` above it: the fee is stored in 80 bits).
MAX_FEE_PER_NODE = 2**80 - 1
#: The largest integer a TOML file can hold unquoted (2**63 - 1, about 9.2e18).
_TOML_INT_MAX = 2**63 - 1


def _minimum(token: str, value: object) -> int:
    """One `accepted_payments` minimum: a real integer or a string of decimal digits, within the fee cap."""
    if isinstance(value, bool):
        raise ValueError(f"{token} = {str(value).lower()}: a minimum fee is an integer (in the token's smallest unit)")
    if isinstance(value, float):
        exact = Decimal(repr(value))
        if exact != exact.to_integral_value():
            raise ValueError(f"{token} = {value!r}: a minimum fee is a whole number in the token's smallest unit")
        whole = int(exact)
        shown = str(whole) if whole <= _TOML_INT_MAX else f'"{whole}"'
        raise ValueError(
            f"{token} = {value!r} is a float: write the integer in full, {token} = {shown} (as a quoted string for"
            f" values above {_TOML_INT_MAX}, the largest TOML integer)"
        )
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"{token} = {value!r}: a minimum fee is an integer or a string of decimal digits")
    if value < 0:
        raise ValueError(f"{token} = {value}: a minimum fee cannot be negative")
    if value > MAX_FEE_PER_NODE:
        raise ValueError(
            f"{token} = {value}: above the Coordinator's fee cap 2**80 - 1 ({MAX_FEE_PER_NODE}); no request can pay"
            " that much, so the model would never be served"
        )
    return value


def _payments(value: object) -> dict[str, int]:
    """`accepted_payments` checked and normalised: at least one token; `ETH` (any case) to the zero address,
    addresses checksummed (a wrong mixed-case checksum refused); each minimum an integer within the fee cap."""
    if not isinstance(value, dict):
        raise ValueError("accepted_payments is a table: token -> minimum fee per node, e.g. { ETH = 1 }")
    if not value:
        raise ValueError(
            "accepted_payments is empty: the model would serve no request; list at least one token, e.g. { ETH = 1 }"
        )
    out: dict[str, int] = {}
    for token, minimum in value.items():
        token = str(token)
        if token.upper() != "ETH" and not is_address(token):
            raise ValueError(f"{token!r} is neither ETH nor an ERC-20 token address (0x + 40 hex digits)")
        key = ETH_TOKEN if token.upper() == "ETH" else _checksum(token)
        if key in out:
            raise ValueError(f"token {token!r} is listed twice")
        out[key] = _minimum(token, minimum)
    return out


#: The keys of a `[[models]]` entry that describe its container: a pipeline has none (its stages keep their own).
CONTAINER_KEYS = ("transport", "url", "timeout_s", "max_attempts", "retry_backoff_s", "max_dispatches")
StageName = Annotated[str, Field(min_length=1)]


class ModelConfig(_Section):
    """`[[models]]`: one served model: its name, its container (HTTP URL or the MQTT pool), concurrency, timeout (s),
    retries, and its fee policy (`accepted_payments`). With `pipeline`, the model is a chain of other entries (its
    stages, each with its own container, timeouts and retries) instead of a container; with `served = false`, the
    entry is only a stage of pipelines and no request may name it."""

    name: str = Field(min_length=1, pattern=r"^[^#+\x00]+$", description='served model name, e.g. "classify/x@1"')
    transport: Literal["http", "mqtt"] = "http"
    url: str | None = Field(default=None, pattern=r"^https?://", description="container base URL (http)")
    timeout_s: float = Field(default=30.0, gt=0, description="per container call / per MQTT dispatch")
    max_concurrency: int = Field(default=4, ge=1, le=4096)
    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_backoff_s: float = Field(default=1.0, gt=0, le=60, description="first retry delay; doubles, capped at 10 s")
    max_dispatches: int = Field(default=3, ge=1, le=20, description="mqtt: re-dispatches before an attempt fails")
    accepted_payments: Annotated[dict[str, int], BeforeValidator(_payments)] = Field(
        default={"ETH": 1},
        validate_default=True,
        description=(
            "payment token (ETH or an ERC-20 address) -> minimum gross fee per node in its smallest unit (wei for"
            " ETH; the protocol's cut, up to 10%, comes off it); requests in other tokens or below the minimum are"
            " skipped without gas. Default: ETH, any fee above 0"
        ),
    )
    max_callback_gas: int = Field(
        default=500_000,
        ge=1,
        le=16_777_215,
        description="requests asking for a larger callback gas limit are skipped: the node pays for the callback's gas",
    )

    attests: bool = Field(
        default=False,
        description=(
            "the container holds an attestation key (--attestation-key-file): serve attestation-verified requests"
        ),
    )

    pipeline: list[StageName] | None = Field(
        default=None,
        description=(
            "names of other [[models]] entries run in order as one job, each output (ABI bytes) the next one's input;"
            " the model then has no container of its own (no transport, url, timeouts or retries: its stages keep"
            " theirs). max_concurrency is then the jobs in the pipeline at once"
        ),
    )
    served: bool = Field(
        default=True,
        description=(
            "false: this entry is only a stage of pipelines; requests naming it (on-chain, delegated, off-chain) are"
            " not served"
        ),
    )

    def minimum_fee(self, token: str) -> int | None:
        """The least fee per node (in `token`'s smallest unit) this model is served for when paid in `token` (a
        checksummed address, the zero address for ETH); None if `token` is not accepted."""
        return self.accepted_payments.get(token)

    @model_validator(mode="after")
    def _shape(self) -> ModelConfig:
        if self.pipeline is None:
            if self.transport == "http" and self.url is None:
                raise ValueError("url is required when transport is http")
            return self
        problems: list[tuple[str, str]] = []
        if len(self.pipeline) < 2:
            problems.append(
                (
                    "pipeline",
                    f"a pipeline chains 2 or more stages, got {len(self.pipeline)}; serve a single model with its own"
                    " [[models]] entry (url or transport) instead",
                )
            )
        for key in CONTAINER_KEYS:
            if key in self.model_fields_set:
                problems.append(
                    (key, "a pipeline has no container of its own: set it on the [[models]] entries of its stages")
                )
        if self.attests:
            problems.append(
                (
                    "attests",
                    "a pipeline cannot attest: no one container signs its output (stages are called without an"
                    " attestation); serve attestation-verified requests from a single model",
                )
            )
        if not self.served:
            problems.append(
                ("served", "a pipeline cannot be a stage (nesting is refused): served = false serves nothing")
            )
        if problems:
            raise KeyProblems(problems)
        return self


class MqttConfig(_Section):
    """`[mqtt]`: the broker that GPU worker pools share jobs through (shared subscriptions)."""

    url: str = Field(pattern=r"^mqtt://", description="broker, e.g. mqtt://127.0.0.1:1883")
    node_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$", description="default: node address")
    username: str | None = None
    password_env: str | None = Field(default=None, description="env variable holding the broker password")


def _store_path(value: Any) -> Any:
    """`store.path` as given: an empty one is refused (it would be the current folder); a leading `~` is expanded to
    the home folder of the user running the node (systemd does not expand it for us either)."""
    if isinstance(value, str | Path):
        text = str(value).strip()
        if not text or text == ".":
            raise ValueError('is empty: give the job store\'s SQLite file, e.g. path = "/var/lib/infera/node.db"')
        if text.startswith("~"):
            return Path(text).expanduser()
    return value


class StoreConfig(_Section):
    """`[store]`: the job store's SQLite path, or the PostgreSQL `url` replicas share (one leader at a time, under a
    lease of `lease_ttl_s` seconds), and how long finished jobs are kept (days). A leading `~` in `path` is
    expanded; an empty `path` is refused (a folder or a missing parent folder is refused when the node starts,
    `node.instance.check_store_path`); a password in `url` is refused (it goes to libpq's PGPASSWORD or passfile)."""

    path: Annotated[Path, BeforeValidator(_store_path)] = Field(
        default=Path("infera.db"), description="SQLite file of jobs, cursor and transactions"
    )
    retention_days: float = Field(default=7.0, gt=0, description="finished jobs are deleted after this long")
    url: str | None = Field(
        default=None,
        pattern=r"^postgres(ql)?://",
        description="PostgreSQL database that replicas share instead of `path` (high availability)",
    )
    lease_ttl_s: float = Field(
        default=15.0, ge=3, le=600, description="PostgreSQL: a standby takes over once the leader's lease is this old"
    )
    replica_name: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="PostgreSQL: this replica's name in the lease and on /status (default host:pid)",
    )

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, value: str | None) -> str | None:
        if value is not None and re.search(r"://[^/@]*:[^/@]*@", value):
            raise ValueError(
                "holds a password: leave it out (postgresql://user@host/db) and give it to libpq instead, in the"
                " PGPASSWORD environment variable or a passfile (PGPASSFILE)"
            )
        return value

    @property
    def location(self) -> str:
        """Where the store is: `url` when set (PostgreSQL), else the SQLite file `path`."""
        return self.url or str(self.path)


class ApiToken(_Section):
    """One client of the REST API. The token itself is never in the file: give its SHA-256 or an env var."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="shown in logs, metrics")
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the token")
    token_env: str | None = Field(default=None, description="env var holding the token")
    rate_per_s: float = Field(default=10.0, gt=0, description="sustained requests per second")
    burst: int = Field(default=20, ge=1, description="requests allowed at once above the sustained rate")

    @model_validator(mode="after")
    def _one_secret(self) -> ApiToken:
        if (self.token_sha256 is None) == (self.token_env is None):
            raise ValueError("give exactly one of token_sha256 or token_env")
        return self


class ApiConfig(_Section):
    """`[api]`: the HTTP server (status page, `/metrics`, `/readyz`, the `/v1` job API), its tokens and limits."""

    host: str = Field(default="127.0.0.1", description="bind address of the HTTP API and status page")
    port: int = Field(default=8600, ge=0, le=65535, description="0: no HTTP server")
    max_lag_blocks: int = Field(default=20, ge=1, description="not ready while the listener trails more than this")
    max_silence_s: float = Field(default=120.0, gt=0, description="not ready when no block was seen for this long")
    min_deliveries_covered: int = Field(
        default=10,
        ge=0,
        description="not ready while a key's balance pays for fewer deliveries at the current gas price (0: off)",
    )
    tokens: list[ApiToken] = Field(default=[], description="clients of /v1 (none: the job endpoints are off)")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20, description="larger bodies get 413")
    max_batch: int = Field(default=64, ge=1, le=1024, description="jobs in one POST /v1/jobs/batch")
    keep_jobs: int = Field(default=10_000, ge=1, description="finished off-chain jobs kept for GET (oldest go)")

    @model_validator(mode="after")
    def _unique_tokens(self) -> ApiConfig:
        names = [t.name for t in self.tokens]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"api.tokens names must be unique; repeated: {', '.join(dupes)}")
        return self


class LogConfig(_Section):
    """`[log]`: log level and format (text or one JSON object a line)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = False


class NodeConfig(BaseSettings):
    """Root of the config file. Nested keys are overridden by `INFERA_<SECTION>__<KEY>` env variables."""

    model_config = SettingsConfigDict(env_prefix="INFERA_", env_nested_delimiter="__", extra="forbid", frozen=True)

    chain: ChainConfig
    wallet: WalletConfig = WalletConfig()
    models: list[ModelConfig] = Field(min_length=1)
    mqtt: MqttConfig | None = None
    store: StoreConfig = StoreConfig()
    api: ApiConfig = ApiConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _unique_models(self) -> NodeConfig:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        over_mqtt = [m.name for m in self.models if m.transport == "mqtt" and m.pipeline is None]
        if over_mqtt and self.mqtt is None:
            raise ValueError(f"models {', '.join(over_mqtt)} use transport mqtt but there is no [mqtt] section")
        return self

    @model_validator(mode="after")
    def _pipelines(self) -> NodeConfig:
        problems = pipeline_problems(self.models)
        if problems:
            raise KeyProblems(problems)
        return self

    def model(self, name: str) -> ModelConfig | None:
        """The `[[models]]` entry named `name`, or None."""
        return next((m for m in self.models if m.name == name), None)

    def stages(self, model: ModelConfig) -> list[ModelConfig]:
        """The entries of `model`'s pipeline stages, in order (`[model]` itself when it is no pipeline)."""
        if model.pipeline is None:
            return [model]
        by_name = {m.name: m for m in self.models}
        return [by_name[stage] for stage in model.pipeline]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: it overrides the file (passed as init kwargs).
        return env_settings, init_settings


def pipeline_problems(models: list[ModelConfig]) -> list[tuple[str, str]]:
    """What is wrong between `[[models]]` entries, as (key, reason): a stage that is not an entry, the pipeline
    itself (a cycle) or another pipeline (nesting is refused: list that pipeline's stages instead), and an entry with
    `served = false` that no pipeline names (it would serve nothing)."""
    by_name = {m.name: m for m in models}
    problems: list[tuple[str, str]] = []
    staged: set[str] = set()
    for i, m in enumerate(models):
        for j, stage in enumerate(m.pipeline or ()):
            key = f"models.{i}.pipeline.{j}"
            staged.add(stage)
            found = by_name.get(stage)
            if stage == m.name:
                problems.append((key, f"{stage!r} is this pipeline itself: a cycle (a stage must have a container)"))
            elif found is None:
                known = ", ".join(sorted(n for n, e in by_name.items() if e.pipeline is None)) or "none"
                problems.append(
                    (key, f"{stage!r} is not the name of a [[models]] entry (entries with a container: {known})")
                )
            elif found.pipeline is not None:
                problems.append(
                    (
                        key,
                        f"{stage!r} is itself a pipeline, and pipelines do not nest: list its stages here instead"
                        f" ({', '.join(found.pipeline)})",
                    )
                )
    for i, m in enumerate(models):
        if not m.served and m.pipeline is None and m.name not in staged:
            problems.append(
                (f"models.{i}.served", f"false, but no pipeline names {m.name!r} as a stage: the entry serves nothing")
            )
    return problems


def config_problems(data: dict[str, Any]) -> tuple[NodeConfig | None, list[str]]:
    """Validates a config mapping (plus env overrides): the config, or None and every problem as `key: reason` (a
    problem of an environment variable as `environment variable NAME: reason`)."""
    # ignored by pydantic-settings: checked here
    problems = config_hints.unknown_env_sections(NodeConfig, named=named_variables(data))
    try:
        cfg = NodeConfig(**data)
    except ValidationError as exc:
        problems += format_errors(exc, NodeConfig)
    except SettingsError as exc:  # an INFERA_… variable whose value is not the JSON its field needs
        problems.append(settings_error(exc))
    else:
        if not problems:
            return cfg, []
    return None, [config_hints.redact(p) for p in problems]  # a key pasted anywhere is never echoed


def parse_config(data: dict[str, Any]) -> NodeConfig:
    """Validates a config mapping (plus env overrides); raises `ConfigError` naming every bad key."""
    cfg, problems = config_problems(data)
    if cfg is None:
        raise ConfigError("; ".join(problems))
    return cfg


def load_config(path: str | Path) -> NodeConfig:
    """Reads and validates a TOML config file; raises `ConfigError` with the file and every bad key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    cfg, problems = config_problems(data)
    if cfg is None:  # the file's problems named with the file; an environment variable's stand on their own
        raise ConfigError("; ".join(p if p.startswith("environment variable ") else f"{path}: {p}" for p in problems))
    return cfg
