"""The files operators deploy with: the compose file must be valid and wire what the README says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "config" / "docker-compose.yaml"


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


def test_systemd_unit_catches_a_typo(tmp_path: Path) -> None:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.fail("systemd-analyze is not installed: run `make deps` (it installs Debian's systemd)")
    unit = tmp_path / "infera-node.service"
    unit.write_text((ROOT / "config" / "infera-node.service").read_text().replace("Restart=", "Restrat=", 1))
    result = subprocess.run([binary, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert "Restrat" in result.stderr
