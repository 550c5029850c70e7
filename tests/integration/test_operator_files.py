"""The files operators deploy with: the compose file must be valid and wire what the README says."""

from __future__ import annotations

import shutil
import subprocess
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
    for service in ("mosquitto:", "node:", "classify-worker:", "embed-worker:"):
        assert f"\n  {service}" in resolved
    assert resolved.count("driver: nvidia") == 2
    assert "--pool" in resolved


def test_compose_validation_catches_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("restart: unless-stopped", "restart_policy: sometimes", 1))
    result = compose_config(bad)
    assert result.returncode != 0
    assert "restart_policy" in result.stderr
