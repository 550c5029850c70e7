from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from node.config import config_problems, load_config, parse_config
from node.errors import ConfigError

ADDRESS = "0x5fbdb2315678afecb367f032d93f642f64180aa3"


def minimal(**chain: object) -> dict[str, object]:
    return {
        "chain": {"rpc_url": "http://127.0.0.1:8545", "coordinator_address": ADDRESS, **chain},
        "models": [{"name": "echo", "url": "http://127.0.0.1:3000"}],
    }


def minimal_file(folder: Path) -> Path:
    """A node.toml with only what is required (one model), in `folder`."""
    path = folder / "node.toml"
    path.write_text(
        f'[chain]\nrpc_url = "http://127.0.0.1:8545"\ncoordinator_address = "{ADDRESS}"\n'
        '[[models]]\nname = "echo"\nurl = "http://127.0.0.1:3000"\n'
    )
    return path


def test_minimal_config_gets_defaults_and_a_checksummed_address() -> None:
    cfg = parse_config(minimal())
    assert cfg.chain.coordinator_address == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    assert cfg.chain.ws_url is None
    assert cfg.wallet.private_key_env == "INFERA_PRIVATE_KEY"
    assert cfg.models[0].max_attempts == 3


def test_missing_key_is_named() -> None:
    data = minimal()
    del data["chain"]["coordinator_address"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"chain\.coordinator_address: Field required"):
        parse_config(data)


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"chain\.rpc_ulr: unknown key"):
        parse_config(minimal(rpc_ulr="http://x"))


def test_every_problem_is_listed() -> None:
    data = minimal(poll_interval_s=-1, coordinator_address="0x1234")
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert "chain.poll_interval_s" in str(info.value)
    assert "chain.coordinator_address: Value error, not an Ethereum address" in str(info.value)


def test_rpc_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match=r"chain\.rpc_url"):
        parse_config(minimal(rpc_url="ws://127.0.0.1:8545"))


def test_staleness_bounds_must_be_in_order() -> None:
    with pytest.raises(ConfigError, match=r"chain: .*stale_head_min_s \(90.0\) is above stale_head_max_s \(60.0\)"):
        parse_config(minimal(stale_head_min_s=90))


def test_duplicate_model_names_are_refused() -> None:
    data = minimal()
    data["models"] = [{"name": "echo", "url": "http://a"}, {"name": "echo", "url": "http://b"}]
    with pytest.raises(ConfigError, match="repeated: echo"):
        parse_config(data)


def test_keystore_needs_a_password_env() -> None:
    data = minimal()
    data["wallet"] = {"keystore_path": "/keys/node.json"}
    with pytest.raises(ConfigError, match="wallet: Value error, keystore_path needs keystore_password_env"):
        parse_config(data)


def test_env_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERA_CHAIN__RPC_URL", "http://10.0.0.1:8545")
    monkeypatch.setenv("INFERA_LOG__LEVEL", "DEBUG")
    cfg = parse_config(minimal())
    assert cfg.chain.rpc_url == "http://10.0.0.1:8545"
    assert cfg.chain.coordinator_address.lower() == ADDRESS  # the rest of the section is kept
    assert cfg.log.level == "DEBUG"


def test_bad_env_override_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERA_CHAIN__POLL_INTERVAL_S", "often")
    with pytest.raises(ConfigError, match=r"chain\.poll_interval_s"):
        parse_config(minimal())


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[chain]\nrpc_url = "http://127.0.0.1:8545"\n')
    with pytest.raises(ConfigError, match=rf"{path}: .*chain\.coordinator_address: Field required"):
        load_config(path)


def test_load_config_reports_toml_syntax(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[chain\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_load_config_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def fill_placeholders(text: str) -> str:
    """A shipped config with its `<...>` placeholders filled in as an operator would (comments left alone): an
    address for `<0x ...>`, a word for the others (an API key in a URL)."""
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.lstrip().startswith("#"):
            line = re.sub(r"<0x[^<>]*>", ADDRESS, line)
            line = re.sub(r"<[^<>]*>", "placeholder", line)
        lines.append(line)
    return "".join(lines)


@pytest.mark.parametrize("name", ["node.example.toml", "devnet.toml", "node.compose.toml", "node.ha.toml"])
def test_shipped_example_configs_are_valid(name: str, tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "config" / name).read_text()
    path = tmp_path / name
    path.write_text(fill_placeholders(text))
    cfg = load_config(path)
    assert cfg.models


def test_public_chain_example_is_safe_for_a_public_chain_and_refused_unfilled() -> None:
    """config/node.example.toml is the public-chain reference: requests buried under 2+ blocks, TLS endpoints, an
    encrypted keystore, a fee policy; as shipped (placeholders in) the node refuses it, naming the key."""
    path = Path(__file__).resolve().parents[2] / "config" / "node.example.toml"
    cfg = parse_config(tomllib.loads(fill_placeholders(path.read_text())))
    assert cfg.chain.confirmations >= 2
    assert cfg.chain.rpc_url.startswith("https://")
    assert (cfg.chain.ws_url or "").startswith("wss://")
    assert cfg.wallet.keystore_path is not None
    assert cfg.wallet.keystore_password_file is not None
    assert all(m.accepted_payments for m in cfg.models)
    with pytest.raises(ConfigError, match=r"chain\.coordinator_address"):
        load_config(path)


def test_devnet_example_is_a_devnet() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "config" / "devnet.toml")
    assert cfg.chain.confirmations == 0
    assert cfg.chain.rpc_url.startswith("http://127.0.0.1:")


def test_example_config_mentions_every_key() -> None:
    """`config/node.example.toml` is the reference: every key of every section appears in it (set or commented)."""
    from node.config import (
        ApiConfig,
        ApiToken,
        ChainConfig,
        LogConfig,
        ModelConfig,
        MqttConfig,
        StoreConfig,
        WalletConfig,
    )

    text = (Path(__file__).resolve().parents[2] / "config" / "node.example.toml").read_text()
    sections = [ChainConfig, WalletConfig, StoreConfig, ApiConfig, ApiToken, LogConfig, ModelConfig]
    missing = [
        f"{section.__name__}.{key}"
        for section in sections
        for key in section.model_fields
        if f"\n{key} =" not in text and f"\n# {key} =" not in text and f"[[api.{key}]]" not in text
    ]
    assert not missing, f"keys without an annotated line in node.example.toml: {missing}"
    assert MqttConfig.model_fields  # documented in README's MQTT section and config/node.compose.toml


def test_api_tokens_need_exactly_one_secret_source_and_unique_names() -> None:
    base = {
        "chain": {"rpc_url": "http://x", "coordinator_address": "0x" + "11" * 20},
        "models": [{"name": "m", "url": "http://c"}],
    }
    with pytest.raises(ConfigError, match=r"api\.tokens\.0.*exactly one of token_sha256 or token_env"):
        parse_config({**base, "api": {"tokens": [{"name": "a"}]}})
    with pytest.raises(ConfigError, match=r"api\.tokens\.0\.token_sha256"):
        parse_config({**base, "api": {"tokens": [{"name": "a", "token_sha256": "not-hex"}]}})
    twice = {"name": "a", "token_env": "T"}
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_config({**base, "api": {"tokens": [twice, twice]}})
    cfg = parse_config({**base, "api": {"tokens": [twice]}})
    assert cfg.api.tokens[0].rate_per_s == 10.0


def test_rate_limit_bucket_allows_burst_then_refills() -> None:
    from node.api.auth import Bucket

    bucket = Bucket(rate_per_s=2.0, burst=3)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)  # one more needs half a second at 2/s
    assert bucket.take(100.5) == 0.0
    assert bucket.take(110.0) == 0.0  # refilled, but never above the burst
    assert [bucket.take(110.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_public_url_hides_what_providers_put_keys_in() -> None:
    from node.chain.rpc import public_url

    assert public_url("https://user:pw@eth.example.com:8443/v3/0123abcd?key=s3cret") == "https://eth.example.com:8443"
    assert public_url("wss://mainnet.example.io/ws/v3/0123abcd") == "wss://mainnet.example.io"
    assert public_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"


def test_a_malformed_env_override_names_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERA_MODELS", "not json")
    base = {"chain": {"rpc_url": "http://x", "coordinator_address": "0x" + "11" * 20}, "models": []}
    with pytest.raises(ConfigError, match=r"^environment variable INFERA_MODELS: models: malformed JSON"):
        parse_config(base)


def test_a_mixed_case_address_with_a_wrong_checksum_is_refused_with_the_right_one() -> None:
    wrong = "0x5FbDB2315678afecb367f032d93F642f64180aA3"  # last "a" of a correct checksum upper-cased
    with pytest.raises(
        ConfigError,
        match=r"coordinator_address: .*checksum mismatch: did you mean 0x5FbDB2315678afecb367f032d93F642f64180aa3",
    ):
        parse_config(minimal(coordinator_address=wrong))
    upper = "0x" + ADDRESS[2:].upper()
    assert parse_config(minimal(coordinator_address=upper)).chain.coordinator_address == (
        "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    )
    with pytest.raises(ConfigError, match=r"chain\.verifiers\..*checksum mismatch"):
        parse_config(minimal(verifiers={wrong: "attestation"}))


@pytest.mark.parametrize(
    ("chain", "key"),
    [
        ({"coordinator_address": "0x" + "00" * 20}, r"chain\.coordinator_address"),
        ({"subscription_manager_address": "0x" + "00" * 20}, r"chain\.subscription_manager_address"),
        ({"verifiers": {"0x" + "00" * 20: "attestation"}}, r"chain\.verifiers\.0x0{40}"),
    ],
)
def test_the_zero_address_is_refused_where_a_contract_is_meant(chain: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key + r".*the zero address cannot be meant here"):
        parse_config(minimal(**chain))


def test_a_malformed_nested_env_override_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from node.commands.config_check import parse_file

    monkeypatch.setenv("INFERA_CHAIN__VERIFIERS", "{bad")
    with pytest.raises(ConfigError, match=r"^environment variable INFERA_CHAIN__VERIFIERS: chain: malformed JSON"):
        parse_config(minimal())
    path = tmp_path / "node.toml"
    path.write_text(
        f'[chain]\nrpc_url = "http://x"\ncoordinator_address = "{ADDRESS}"\n[[models]]\nname = "m"\nurl = "http://y"\n'
    )
    cfg, problems = parse_file(path)  # `infera config check`: the same line, not "unexpected SettingsError"
    assert cfg is None
    assert len(problems) == 1
    assert problems[0].startswith("environment variable INFERA_CHAIN__VERIFIERS: chain: malformed JSON")


def test_overriding_one_models_table_by_env_says_lists_of_tables_go_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERA_MODELS__0__ACCEPTED_PAYMENTS", '{"ETH": 5}')
    with pytest.raises(ConfigError) as info:
        parse_config(minimal())
    message = str(info.value)
    assert "INFERA_MODELS__0__ACCEPTED_PAYMENTS" in message
    assert "[[models]] tables can only be overridden as a whole, as JSON (INFERA_MODELS='[{...}, ...]')" in message
    monkeypatch.delenv("INFERA_MODELS__0__ACCEPTED_PAYMENTS")
    monkeypatch.setenv(
        "INFERA_MODELS", '[{"name": "other", "url": "http://127.0.0.1:1", "accepted_payments": {"ETH": 5}}]'
    )
    cfg = parse_config(minimal())
    assert [m.name for m in cfg.models] == ["other"]
    assert cfg.models[0].accepted_payments == {"0x0000000000000000000000000000000000000000": 5}


class _FakeEth:
    """Just enough of `w3.eth` for the online contract checks: code per address, `window()` per address."""

    def __init__(self, code: dict[str, bytes], windows: dict[str, int]) -> None:
        self.code, self.windows = code, windows

    def get_code(self, address: str) -> bytes:
        return self.code.get(address, b"")

    def contract(self, address: str, abi: object) -> object:
        windows = self.windows

        class _Call:
            def call(self) -> int:
                if address not in windows:
                    raise ValueError("execution reverted")
                return windows[address]

        class _Functions:
            def window(self) -> _Call:
                return _Call()

        class _Contract:
            functions = _Functions()

        return _Contract()


def test_online_checks_name_each_verifier_and_token_that_is_not_what_the_config_says() -> None:
    from types import SimpleNamespace

    from eth_utils.address import to_checksum_address

    from node.commands.config_check import Report, check_contracts

    att, opt, eoa, noverifier, swapped = ("0x" + c * 40 for c in "abcde")
    token, missing_token = "0x" + "12" * 20, "0x" + "34" * 20
    cs = {a: to_checksum_address(a) for a in (att, opt, eoa, noverifier, swapped, token, missing_token)}
    kinds = {att: "attestation", opt: "optimistic", eoa: "optimistic", noverifier: "attestation"}
    data = minimal(verifiers=kinds | {swapped: "attestation"})
    data["models"] = [{"name": "m", "url": "http://y", "accepted_payments": {"ETH": 1, token: 1, missing_token: 1}}]
    cfg = parse_config(data)
    code = {cs[a]: b"\x60\x00" for a in (att, opt, noverifier, swapped, token)}
    w3 = SimpleNamespace(eth=_FakeEth(code, {cs[att]: 0, cs[opt]: 1200, cs[swapped]: 600}))
    report = Report()
    check_contracts(cfg, w3, report)
    text = "\n".join(report.problems)
    assert len(report.problems) == 4, text
    assert f"chain.verifiers.{cs[eoa]}: no contract at this address" in text
    assert f"chain.verifiers.{cs[noverifier]}: the contract does not answer window()" in text
    assert f'chain.verifiers.{cs[swapped]}: listed as "attestation" but its window() is 600 s' in text
    assert f"models[0].accepted_payments.{cs[missing_token]}: no contract at this address" in text


def test_online_check_of_an_attesting_model_asks_the_container_for_its_attester() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from node.commands.config_check import Report, check_attester

    answers = {"attester": None}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answers).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        report = Report()
        check_attester(0, url, report)
        assert report.problems == [
            f"models[0].attests: the container at {url} reports no attester in /info: start it with"
            " --attestation-key-file (and register the key's address with the verifier), or set attests = false"
        ]
        answers["attester"] = "0x" + "ab" * 20
        report = Report()
        check_attester(0, url, report)
        assert report.problems == []
        assert report.facts == [f"attester  {answers['attester']} (container of models[0])"]
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------- typos, and where they are


def test_a_misspelt_env_variable_is_named_as_one_with_the_variable_meant(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INFERA_CHAIN__RPC_ULR", "http://10.0.0.1:8545")
    with pytest.raises(ConfigError) as caught:
        load_config(minimal_file(tmp_path))
    assert str(caught.value) == (
        "environment variable INFERA_CHAIN__RPC_ULR: chain.rpc_ulr is not a config key (unset it, or check its"
        " spelling); did you mean INFERA_CHAIN__RPC_URL?"
    )  # not blamed on the file


@pytest.mark.parametrize(
    ("var", "meant"),
    [
        ("INFERA_API__PORTT", "INFERA_API__PORT"),
        ("INFERA_STORE__RETENTION_DAY", "INFERA_STORE__RETENTION_DAYS"),
        ("infera_log__levle", "INFERA_LOG__LEVEL"),  # read without regard to case, named as it is spelt
        ("INFERA_CHIAN__RPC_URL", "INFERA_CHAIN__RPC_URL"),  # a section nobody knows: silently ignored before
        ("INFERA_WALET__PRIVATE_KEY_ENV", "INFERA_WALLET__PRIVATE_KEY_ENV"),
    ],
)
def test_any_misspelt_env_variable_gets_the_one_meant(monkeypatch: pytest.MonkeyPatch, var: str, meant: str) -> None:
    monkeypatch.setenv(var, "1")
    cfg, problems = config_problems(minimal())
    assert cfg is None
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"environment variable {var}: ")
    assert problems[0].endswith(f"did you mean {meant}?")


def test_variables_that_are_no_override_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERA_PRIVATE_KEY", "0x01")  # the key's default env var, not a config key
    monkeypatch.setenv("INFERA_DEBUG", "1")
    assert config_problems(minimal())[1] == []


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("rpc_ulr", "chain.rpc_ulr: unknown key (check its spelling and section); did you mean chain.rpc_url?"),
        ("port", "chain.port: unknown key (check its spelling and section); it is a key of [api]"),
        ("zzzz", "chain.zzzz: unknown key (check its spelling and section)"),
    ],
)
def test_a_misspelt_key_of_the_file_gets_the_key_meant(key: str, line: str) -> None:
    data = minimal(**{key: 1})
    assert config_problems(data)[1] == [line]


def test_a_misspelt_key_of_a_models_table_gets_the_key_meant() -> None:
    data = minimal()
    data["models"] = [{"name": "echo", "url": "http://127.0.0.1:3000", "timout_s": 3}]
    assert config_problems(data)[1] == [
        "models.0.timout_s: unknown key (check its spelling and section); did you mean models.0.timeout_s?"
    ]


def test_a_misspelt_section_of_the_file_gets_the_section_meant() -> None:
    data = {**minimal(), "stoer": {"path": "x.db"}}
    assert config_problems(data)[1] == ["stoer: unknown key (check its spelling and section); did you mean store?"]


# ------------------------------------------------------------------------ secrets, env blame and shapes (review)

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil's public dev account 1


@pytest.mark.parametrize("value", [KEY, KEY[2:], KEY.upper().replace("0X", "0x")])
def test_a_private_key_where_a_variable_name_goes_is_refused_and_never_echoed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv("INFERA_WALLET__PRIVATE_KEY", value)  # the key itself, as a (non-)key of [wallet]
    cfg, problems = config_problems(minimal())
    assert cfg is None
    assert len(problems) == 1, problems
    assert problems[0].startswith("environment variable INFERA_WALLET__PRIVATE_KEY holds a private key (not shown)")
    assert "INFERA_PRIVATE_KEY=0x…" in problems[0]
    assert "did you mean" not in problems[0]
    monkeypatch.delenv("INFERA_WALLET__PRIVATE_KEY")
    monkeypatch.setenv("INFERA_WALLET__PRIVATE_KEY_ENV", value)  # following the old advice
    path = tmp_path / "node.toml"
    path.write_text(
        f'[chain]\nrpc_url = "http://127.0.0.1:8545"\ncoordinator_address = "{ADDRESS}"\n'
        f'[wallet]\nextra_key_envs = ["{value}"]\n[[models]]\nname = "echo"\nurl = "http://127.0.0.1:3000"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert value[-60:].lower() not in message.lower()
    assert "environment variable INFERA_WALLET__PRIVATE_KEY_ENV: wallet.private_key_env: Value error, this is a" in (
        message
    )
    assert f"{path}: wallet.extra_key_envs.0: Value error, this is a private key (not shown)" in message
    assert "the variable named by private_key_env must hold the key (e.g. INFERA_PRIVATE_KEY=0x…" in message


def test_a_key_pasted_into_any_value_is_redacted_from_the_error() -> None:
    cfg, problems = config_problems(minimal(coordinator_address=KEY))
    assert cfg is None
    assert KEY[2:] not in " ".join(problems)
    assert "not an Ethereum address: '<redacted: a private key?>'" in problems[0]


def test_one_key_variable_listed_twice_in_wallet_is_refused() -> None:
    data = {**minimal(), "wallet": {"private_key_env": "K1", "extra_key_envs": ["K2", "K1"]}}
    assert config_problems(data)[1] == [
        "wallet: Value error, K1 is listed twice in [wallet] (private_key_env and extra_key_envs): one node sends from"
        " each key once; remove the repeat"
    ]


@pytest.mark.parametrize(
    ("var", "meant"),
    [
        ("INFERA_CHAIN_RPC_URL", "INFERA_CHAIN__RPC_URL"),
        ("INFERA_RPC_URL", "INFERA_CHAIN__RPC_URL"),
        ("infera_api_port", "INFERA_API__PORT"),
        ("INFERA_CONFIRMATIONS", "INFERA_CHAIN__CONFIRMATIONS"),
    ],
)
def test_a_variable_with_one_underscore_where_two_go_is_named(
    monkeypatch: pytest.MonkeyPatch, var: str, meant: str
) -> None:
    monkeypatch.setenv(var, "http://10.0.0.1:8545")
    cfg, problems = config_problems(minimal())
    assert cfg is None
    assert problems == [
        f"environment variable {var} is not read (a section and its key are joined by two underscores); did you mean"
        f" {meant}?"
    ]


def test_the_nodes_own_variables_and_those_the_config_names_are_no_typos(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("INFERA_PRIVATE_KEY", "INFERA_FAULT_POINT", "INFERA_DEBUG", "INFERA_MQTT_PASSWORD", "INFERA_URL"):
        monkeypatch.setenv(var, "1")  # INFERA_URL: url is a key of two sections, so no one meant
    monkeypatch.setenv("INFERA_API_TOKEN", "1")
    monkeypatch.setenv("INFERA_STORE_PATH", "1")  # config-shaped, but the config names it (a token's token_env)
    data = {**minimal(), "api": {"tokens": [{"name": "a", "token_env": "INFERA_STORE_PATH"}]}}
    assert config_problems(data)[1] == []


@pytest.mark.parametrize(
    ("var", "value", "line"),
    [
        (
            "INFERA_CHAIN__CONFIRMATIONS",
            "abc",
            "environment variable INFERA_CHAIN__CONFIRMATIONS: chain.confirmations:",
        ),
        ("INFERA_API__PORT", "99999", "environment variable INFERA_API__PORT: api.port: Input should be less than"),
        (
            "INFERA_MODELS",
            '[{"name": "m", "url": "ftp://x"}]',
            "environment variable INFERA_MODELS: models.0.url: String should match pattern",
        ),
    ],
)
def test_a_bad_value_from_the_environment_is_blamed_on_its_variable_not_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, var: str, value: str, line: str
) -> None:
    monkeypatch.setenv(var, value)
    path = minimal_file(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(line), str(caught.value)
    assert str(path) not in str(caught.value)


def test_models_as_one_table_says_use_an_array_of_tables() -> None:
    data = {**minimal(), "models": {"name": "echo", "url": "http://127.0.0.1:3000"}}
    assert config_problems(data)[1] == ["models: use [[models]] (an array of tables: one [[models]] header per entry)"]


def test_an_empty_store_path_is_refused_and_a_tilde_is_expanded() -> None:
    assert config_problems({**minimal(), "store": {"path": ""}})[1] == [
        'store.path: Value error, is empty: give the job store\'s SQLite file, e.g. path = "/var/lib/infera/node.db"'
    ]
    cfg = parse_config({**minimal(), "store": {"path": "~/infera/node.db"}})
    assert cfg.store.path == Path.home() / "infera" / "node.db"


@pytest.mark.parametrize("var", ["INFERA_WALET__PRIVATE_KEY_ENV", "INFERA_WALLET_PRIVATE_KEY_ENV"])
def test_a_key_in_a_misspelt_variable_is_not_steered_to_a_name_that_would_echo_it(
    monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    monkeypatch.setenv(var, KEY)
    cfg, problems = config_problems(minimal())
    assert cfg is None
    assert problems == [
        f"environment variable {var} holds a private key (not shown), but no config key takes a key itself: put it in"
        " the variable that wallet.private_key_env names (by default INFERA_PRIVATE_KEY: INFERA_PRIVATE_KEY=0x…,"
        f' private_key_env = "INFERA_PRIVATE_KEY"), and unset {var}'
    ]


def test_an_unknown_key_inside_a_json_override_is_blamed_on_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERA_MODELS", '[{"name": "m", "url": "http://127.0.0.1:1", "timout_s": 3}]')
    assert config_problems(minimal())[1] == [
        "environment variable INFERA_MODELS: models.0.timout_s: unknown key (check its spelling and section); did you"
        " mean models.0.timeout_s?"
    ]
