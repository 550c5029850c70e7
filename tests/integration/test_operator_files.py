"""The files operators deploy with: the compose file must be valid and wire what the README says; the systemd unit
verifies and is hardened; the Prometheus alert rules load, fire when they should (promtool) and point at a runbook
section that exists."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from eth_account import Account

from node.keys import encrypt_key
from tests.unit.test_config import fill_placeholders

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "config" / "docker-compose.yaml"
HA_COMPOSE = ROOT / "config" / "docker-compose.ha.yaml"
ALERTS = ROOT / "config" / "alerts.yml"
ALERTS_TEST = ROOT / "tests" / "prometheus" / "alerts_test.yml"
OPERATORS = ROOT / "docs" / "OPERATORS.md"


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run `make deps` (it installs Debian's docker-compose)")
    return subprocess.run([binary, "-f", str(path), "config"], capture_output=True, text=True, check=False)


def test_compose_file_is_accepted_and_reserves_gpus() -> None:
    result = compose_config(COMPOSE)
    assert result.returncode == 0, result.stderr
    resolved = result.stdout
    for service in ("mosquitto:", "node:", "classify-worker:", "embed-worker:", "llm-worker:"):
        assert f"\n  {service}" in resolved
    assert resolved.count("driver: nvidia") == 3  # one GPU per model worker
    assert "--pool" in resolved


def test_ha_compose_file_runs_two_replicas_on_one_postgresql_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/docker-compose.ha.yaml: PostgreSQL with a health check, two replicas of one config with their own
    names, restarted whatever the exit (a replica that lost the lease exits 1), the password only in libpq's
    PGPASSWORD; config/node.ha.toml is a valid config whose store is that database."""
    from node.commands.config_check import parse_file

    monkeypatch.setenv("POSTGRES_PASSWORD", "from-the-host")
    result = compose_config(HA_COMPOSE)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    replicas = [services["node-a"], services["node-b"]]
    assert [r["environment"]["INFERA_STORE__REPLICA_NAME"] for r in replicas] == ["node-a", "node-b"]
    assert all(r["restart"] == "always" and r["environment"]["PGPASSWORD"] == "from-the-host" for r in replicas)
    assert all(r["depends_on"]["postgres"]["condition"] == "service_healthy" for r in replicas)
    assert len({v for r in replicas for v in r["volumes"] if v.endswith("/etc/infera/node.toml:ro")}) == 1
    cfg, problems = parse_file(ROOT / "config" / "node.ha.toml")
    assert problems == []
    assert cfg is not None
    assert cfg.store.url == "postgresql://infera@postgres:5432/infera"
    monkeypatch.delenv("POSTGRES_PASSWORD")
    refused = compose_config(HA_COMPOSE)  # a forgotten password stops compose, not the database at start
    assert refused.returncode != 0
    assert "set POSTGRES_PASSWORD" in refused.stderr


def test_compose_validation_catches_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("restart: unless-stopped", "restart_policy: sometimes", 1))
    result = compose_config(bad)
    assert result.returncode != 0
    assert "restart_policy" in result.stderr


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """The shipped unit passes `systemd-analyze verify` once its paths point at an installed `infera`."""
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.fail("systemd-analyze is not installed: run `make deps` (it installs Debian's systemd)")
    infera = Path(sys.executable).parent / "infera"
    assert infera.exists(), "the infera entry point is missing: pip install -e ."
    unit = tmp_path / "infera-node.service"
    unit.write_text(
        (ROOT / "config" / "infera-node.service").read_text().replace("/opt/infera/.venv/bin/infera", str(infera))
    )
    result = subprocess.run([binary, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    text = unit.read_text()
    assert "--log-json" in text
    assert "LoadCredential=keystore-password:" in text  # the password never sits in the unit or the environment
    assert "Environment=" not in text


def security_exposure(unit: Path) -> float:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed (make deps installs Debian's systemd)")
    result = subprocess.run(
        [binary, "security", "--offline=true", "--no-pager", str(unit)], capture_output=True, text=True, check=False
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def test_systemd_unit_is_hardened() -> None:
    """`systemd-analyze security` rates the shipped unit 3.0 or less (10 is no hardening at all), and what the node
    needs is kept: the network, its state directory, the password credential."""
    assert security_exposure(ROOT / "config" / "infera-node.service") <= 3.0
    text = (ROOT / "config" / "infera-node.service").read_text()
    assert "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n" in text
    assert "\nIPAddressDeny=" not in text
    assert "\nPrivateNetwork=" not in text
    assert "StateDirectory=infera\n" in text
    assert "ReadWritePaths=/var/lib/infera\n" in text


def test_security_rating_tells_hardening_apart(tmp_path: Path) -> None:
    """The rating the test above relies on moves: the unit without its hardening lines rates above 3.0."""
    text = (ROOT / "config" / "infera-node.service").read_text()
    bare = text[: text.index("# Hardening")] + text[text.index("[Install]") :]
    unit = tmp_path / "infera-node.service"
    unit.write_text(bare)
    assert security_exposure(unit) > 3.0


def test_systemd_unit_catches_a_typo(tmp_path: Path) -> None:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.fail("systemd-analyze is not installed: run `make deps` (it installs Debian's systemd)")
    unit = tmp_path / "infera-node.service"
    unit.write_text((ROOT / "config" / "infera-node.service").read_text().replace("Restart=", "Restrat=", 1))
    result = subprocess.run([binary, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert "Restrat" in result.stderr


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed: run `make deps` (it extracts promtool from Debian's prometheus package)"
        )
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, check=False, cwd=ROOT)


def test_alert_rules_load() -> None:
    result = promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout, result.stdout


def test_alert_rules_fire_when_they_should() -> None:
    """tests/prometheus/alerts_test.yml: for every alert, series that fire it (labels and annotations as expected)
    and series that do not."""
    result = promtool("test", "rules", ALERTS_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        t["alertname"] for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for t in case["alert_rule_test"]
    }
    assert tested == set(alert_rules()), "every alert has a promtool test case"


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    bad = tmp_path / "alerts.yml"
    bad.write_text(ALERTS.read_text().replace("infera_ready == 0", "infera_ready == = 0", 1))
    result = promtool("check", "rules", bad)
    assert result.returncode != 0
    assert '"InferaNodeNotReady": could not parse expression' in result.stdout + result.stderr


def test_promtool_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests pin the thresholds: a lag alert at 60 blocks instead of 20 no longer fires on 50."""
    (tmp_path / "alerts.yml").write_text(
        ALERTS.read_text().replace("infera_listener_lag_blocks > 20", "infera_listener_lag_blocks > 60")
    )
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST.read_text().replace("../../config/alerts.yml", "alerts.yml"))
    result = promtool("test", "rules", tmp_path / "alerts_test.yml")
    assert result.returncode != 0
    assert "alertname: InferaListenerLag, time: 6m" in result.stdout + result.stderr


def alert_rules() -> dict[str, dict[str, object]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of `markdown`: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_alert_says_what_to_do_and_links_its_runbook() -> None:
    anchors = github_anchors(OPERATORS.read_text())
    for name, rule in alert_rules().items():
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations["summary"], name
        assert annotations["description"], name
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/OPERATORS.md", name
        assert anchor in anchors, f"{name}: docs/OPERATORS.md has no section #{anchor}"
        assert rule["labels"]["severity"] in ("warning", "critical"), name  # type: ignore[index]


def config_check(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`infera config check` as an operator runs it, in a process with only `env` (and PATH/PYTHONPATH) set."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "HOME")}
    command = [sys.executable, "-m", "node.cli", "config", "check", "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, check=False, env={**base, **env}, cwd=ROOT)


def test_public_chain_example_passes_config_check_with_the_cli_password_path(tmp_path: Path) -> None:
    """config/node.example.toml, placeholders filled in, passes `infera config check` when run outside the service
    the way docs/OPERATORS.md says: the keystore password file's path given by INFERA_WALLET__KEYSTORE_PASSWORD_FILE
    (the file's own path names the service's credential, which exists only inside the service)."""
    account = Account.create()
    keystore, password = tmp_path / "node-key.json", tmp_path / "keystore.password"
    keystore.write_text(json.dumps(encrypt_key(account.key, "operator password", scrypt_n=2**4)))
    password.write_text("operator password\n")
    password.chmod(0o600)
    config = tmp_path / "node.toml"
    config.write_text(fill_placeholders((ROOT / "config" / "node.example.toml").read_text()))

    without = config_check(config, {"INFERA_WALLET__KEYSTORE_PATH": str(keystore)})
    assert without.returncode == 1
    assert "/run/credentials/infera-node.service/keystore-password does not exist" in without.stdout + without.stderr

    env = {"INFERA_WALLET__KEYSTORE_PATH": str(keystore), "INFERA_WALLET__KEYSTORE_PASSWORD_FILE": str(password)}
    result = config_check(config, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert account.address in result.stdout


def test_devnet_example_passes_config_check() -> None:
    key = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil's account 1
    result = config_check(ROOT / "config" / "devnet.toml", {"INFERA_PRIVATE_KEY": key})
    assert result.returncode == 0, result.stdout + result.stderr
    assert Account.from_key(key).address in result.stdout


def test_dashboard_is_valid_and_its_panels_do_not_overlap() -> None:
    """config/grafana-dashboard.json loads, its panel ids are unique and no two panels share a grid cell (Grafana
    would move one). Its metric names are checked against a running node in tests/e2e/test_metrics.py."""
    dashboard = json.loads((ROOT / "config" / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], int] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = p["id"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
