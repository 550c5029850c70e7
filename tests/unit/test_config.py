from __future__ import annotations

from pathlib import Path

import pytest

from node.config import load_config, parse_config
from node.errors import ConfigError

ADDRESS = "0x5fbdb2315678afecb367f032d93f642f64180aa3"


def minimal(**chain: object) -> dict[str, object]:
    return {
        "chain": {"rpc_url": "http://127.0.0.1:8545", "coordinator_address": ADDRESS, **chain},
        "models": [{"name": "echo", "url": "http://127.0.0.1:3000"}],
    }


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


@pytest.mark.parametrize("name", ["node.example.toml", "devnet.toml", "node.compose.toml"])
def test_shipped_example_configs_are_valid(name: str) -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "config" / name)
    assert cfg.models


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
    with pytest.raises(ConfigError, match=r"^models: its environment override INFERA_MODELS"):
        parse_config(base)
