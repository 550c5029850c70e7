"""docs/OPERATORS.md, section 2 ("First day on a test chain"), run as written: its shell block, from an empty
folder, on a real anvil, with the real MiniLM container and the node process, until the node has earned its first
fee. Only the ports (free ones instead of 8545/3000/8600) and the install's path are changed."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from node.devnet import ROOT, free_port

pytestmark = pytest.mark.e2e

GUIDE = ROOT / "docs" / "OPERATORS.md"


def first_day_block() -> str:
    """The first ```sh block of section 2 of the guide."""
    text = GUIDE.read_text()
    section = text[text.index("## 2. First day on a test chain") : text.index("## 3. Keys")]
    found = re.search(r"```sh\n(.*?)\n```", section, flags=re.DOTALL)
    assert found, "section 2 of docs/OPERATORS.md has no ```sh block"
    return found.group(1)


def print_step_times(out: str) -> None:
    """Prints each top-level command of the traced block with the seconds until the next one started (a trace line
    may follow output that ends without a newline, as curl's does)."""
    steps = [(float(m[1]), m[2]) for m in re.finditer(r"(?<!\+)\+ (\d{9,}\.\d+) ([^\n]*)", out)]
    if not steps:
        return
    print(f"\nthe guide's first day, {steps[-1][0] - steps[0][0]:.1f} s from the first command to the last:")
    for (start, command), (after, _) in itertools.pairwise(steps):
        print(f"  {after - start:6.1f} s  {command[:110]}")


def test_first_day_runs_as_written(contracts_built: None, tmp_path: Path) -> None:
    chain, container, api = free_port(), free_port(), free_port()
    script = first_day_block()
    assert "mkdir ~/infera-day1 && cd ~/infera-day1" in script
    script = script.replace("mkdir ~/infera-day1 && cd ~/infera-day1", f"cd {tmp_path}")
    script = script.replace("/opt/infera/.venv/bin", str(Path(sys.executable).parent)).replace("/opt/infera", str(ROOT))
    script = script.replace(":8545", f":{chain}").replace("--port 8545", f"--port {chain}")
    script = script.replace("127.0.0.1:3000", f"127.0.0.1:{container}").replace("--port 3000", f"--port {container}")
    script = script.replace("127.0.0.1:8600", f"127.0.0.1:{api}")
    # The example config keeps the default API port and container URL, which the guide's block does not change.
    config_done = script.index('infera.db\\"|" node.toml') + len('infera.db\\"|" node.toml')
    script = (
        script[:config_done]
        + f"\nsed -i -e 's|^port = 8600|port = {api}|' -e 's|127.0.0.1:3000\"|127.0.0.1:{container}\"|' node.toml"
        + script[config_done:]
    )
    # Every command of the block is traced with the time it started: the step times are printed (pytest -s).
    script = "export PS4='+ ${EPOCHREALTIME} '\nset -x\n" + script
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        ["bash", "-e", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # anvil, the container and the node are its jobs: one process group to end
    )
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-6000:]
    print_step_times(out)
    assert '{"label": "positive"' in out, out[-6000:]
    assert re.search(r"registered 0x[0-9a-fA-F]{40} with a stake of 1 ETH; active: yes", out), out[-6000:]
    assert re.search(r"Coordinator\s+0\.001 ETH", out), out[-6000:]  # the first fee, unclaimed in the Coordinator
    # `jobs list` right after the answer: the delivery may not be 3 blocks deep yet (submitted), as the guide says.
    assert re.search(r"\s1\s+(submitted|confirmed)\s+classify/minilm-sentiment@1", out), out[-6000:]
