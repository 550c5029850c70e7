"""The devnet's files: node.toml values escaped, one devnet per work folder, a fresh store each run, `--out` checked
before anything starts."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from node.devnet.processes import DevnetError
from node.devnet.system import _toml_value
from node.devnet.workdir import check_writable, hold_out, hold_workdir

AWKWARD = ['/tmp/my "dev\\net"/node.db', "C:\\Users\\x", "tab\there\nnewline\r\x00\x1f\x7f", "é ✓ 😀", ""]


@pytest.mark.parametrize("text", AWKWARD)
def test_a_toml_string_value_reads_back_as_written(text: str) -> None:
    table = {'k"e\\y': text, "n": [text, 1]}
    document = f"path = {_toml_value(text)}\ntable = {_toml_value(table)}\n"
    assert tomllib.loads(document) == {"path": text, "table": table}


def test_toml_numbers_and_booleans_keep_their_types_and_huge_integers_go_as_strings() -> None:
    document = "\n".join(f"v{i} = {_toml_value(v)}" for i, v in enumerate([True, 0, -7, 2.5, 2**64]))
    assert tomllib.loads(document) == {"v0": True, "v1": 0, "v2": -7, "v3": 2.5, "v4": str(2**64)}


def test_a_held_workdir_refuses_a_second_devnet_naming_the_holder_and_is_free_once_released(tmp_path: Path) -> None:
    with hold_workdir(tmp_path / "work"):
        with pytest.raises(DevnetError) as refused, hold_workdir(tmp_path / "work"):
            pass
        message = str(refused.value)
        assert f"in use by another devnet (PID {os.getpid()})" in message
        assert "--workdir DIR" in message
        assert "\n" not in message
    with hold_workdir(tmp_path / "work"):  # the lock went with the first holder
        pass


def test_holding_a_workdir_removes_the_last_runs_state_and_keeps_the_rest(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    (workdir / "models" / "smollm2").mkdir(parents=True)
    last_run = ["node.db", "node.db-wal", "node.db-shm", "node.toml", "node2.db", "node2.toml", "deployment.json"]
    for name in (*last_run, "devnet.json", "node.log", "notes.toml", "models/smollm2/model.safetensors"):
        (workdir / name).write_text("last run")
    with hold_workdir(workdir):
        assert [name for name in (*last_run, "devnet.json") if (workdir / name).exists()] == []
        assert (workdir / "node.log").read_text() == "last run"
        assert (workdir / "notes.toml").exists()  # a name the devnet never writes
        assert (workdir / "models" / "smollm2" / "model.safetensors").exists()


@pytest.mark.parametrize("out", ["/sys/devnet.json", "/proc/self/devnet/devnet.json"])
def test_an_out_that_cannot_be_written_is_named_in_one_line(out: str) -> None:
    with pytest.raises(DevnetError, match=f"^--out {out}: cannot write there \\(.+\\)$"):
        check_writable(Path(out))


def test_an_out_that_is_a_folder_is_refused_and_a_stale_file_removed(tmp_path: Path) -> None:
    with pytest.raises(DevnetError, match="is a folder"):
        check_writable(tmp_path)
    stale = tmp_path / "new" / "devnet.json"
    stale.parent.mkdir()
    stale.write_text("{}")
    check_writable(stale)
    assert not stale.exists()
    assert list(stale.parent.iterdir()) == []  # the probe is gone too


def test_an_out_outside_the_workdir_is_held_so_another_devnet_cannot_overwrite_it(tmp_path: Path) -> None:
    out = tmp_path / "app" / "devnet.json"
    with hold_out(out, tmp_path / "work"):
        out.write_text("{}")  # the first devnet's live file
        with pytest.raises(DevnetError) as refused, hold_out(out, tmp_path / "other-work"):
            pass
        assert out.read_text() == "{}", "a refused devnet must not remove the live devnet.json"
        assert str(refused.value) == (
            f"--out {out} is in use by another devnet (PID {os.getpid()}): stop it, or choose another file with "
            "--out PATH"
        )
    with hold_out(out, tmp_path / "other-work"):  # released with the first devnet
        pass
    workdir = tmp_path / "work"
    with hold_workdir(workdir), hold_out(workdir / "devnet.json", workdir):  # covered by the workdir's own lock
        assert not (workdir / ".devnet.json.lock").exists()
