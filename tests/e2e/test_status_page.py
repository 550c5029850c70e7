"""The status page of a node process, rendered by headless Debian Chromium: what a person sees after the node
delivered requests through the echo container on a real anvil."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from node import __version__
from node.devnet import wait_until
from node.devnet.deployment import DEVNET_MIN_STAKE_WEI
from node.observability import memory
from node.observability.health import CHECKS
from tests.e2e.test_metrics import MODEL, REQUESTS, EchoNode, echo_node

CHROMIUM = Path("/usr/bin/chromium")
ETH = "0x" + "00" * 20

pytestmark = pytest.mark.e2e


class Page(HTMLParser):
    """The rendered DOM, as text: by element id, the containers' lines and the jobs table's rows."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.refreshes = 0
        self.containers: dict[str, str] = {}  # model → health word
        self.checks: dict[str, str] = {}  # readiness check → verdict word ("ok", "failing")
        self.why: dict[str, list[str]] = {}  # readiness check → its problem lines
        self.wallets: list[dict[str, str]] = []
        self.jobs: list[dict[str, str]] = []
        self._open: list[tuple[str, str | None, str | None, dict[str, str | None]]] = []  # tag, id, class, attrs
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.refreshes = int(a.get("data-refreshes") or 0)
        self._open.append((tag, a.get("id"), a.get("class"), a))
        if tag == "tr" and self._inside("jobs"):
            self.jobs.append({})
        elif tag == "tr" and self._inside("wallets"):
            self.wallets.append({})

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, id_, _, _ in self._open:
            if id_:
                self.by_id[id_] = self.by_id.get(id_, "") + data
        cls = self._open[-1][2] if self._open else None
        if cls and self._inside("jobs") and self.jobs:
            self.jobs[-1][cls.split()[0]] = data.strip()
        elif cls and self._inside("wallets") and self.wallets:
            self.wallets[-1][cls.split()[0]] = data.strip()
        elif cls and self._inside("checks") and cls.split()[0] in ("verdict", "why"):
            check = str(next(a.get("data-check") for t, _, _, a in reversed(self._open) if t == "li"))
            if cls.startswith("verdict"):
                self.checks[check] = data.strip()
            else:
                self.why.setdefault(check, []).append(data.strip())
        elif cls and cls.startswith("health") and self._inside("containers"):
            model = next(a.get("data-model") for t, _, _, a in reversed(self._open) if t == "li")
            self.containers[str(model)] = data.strip()

    def _inside(self, id_: str) -> bool:
        return any(i == id_ for _, i, _, _ in self._open)


def render(url: str, profile: Path) -> Page:
    """The page's DOM after its scripts ran (Chromium's virtual time lets the first /status fetch finish)."""
    argv = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=7000",  # the page redraws every 3 s: two redraws at least
        "--dump-dom",
        url,
    ]
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: run `make test` (it installs it) or apt-get install chromium")
    result = subprocess.run(argv, capture_output=True, timeout=60, check=True)
    return Page(result.stdout.decode())


def eth(wei: int) -> str:
    """How the page writes a wei amount: whole ether, six decimals (cut, not rounded)."""
    return f"{wei // 10**18}.{str(wei % 10**18).zfill(18)[:6]} ETH"


@pytest.fixture(scope="module")
def echo(contracts_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoNode]:
    with echo_node(tmp_path_factory.mktemp("status-page")) as system:
        yield system


def test_page_shows_head_wallet_containers_and_delivered_jobs(echo: EchoNode, tmp_path: Path) -> None:
    w3, address = echo.dev.w3, echo.dev.node_account.address

    def shown() -> Page | None:
        page = render(f"{echo.api}/", tmp_path / "chromium")
        # Until its first /status answer the page says "loading…"; until the first probe a container is "checking";
        # the balance is the chain's once the node has applied its last receipt (or re-read it: every 15 s).
        balance = eth(w3.eth.get_balance(address))
        if page.by_id.get("ready") != "ready" or page.containers.get(MODEL) == "checking":
            return None
        shown = [(w["address"], w["balance"]) for w in page.wallets]
        # the standing (stake, unclaimed fees) is re-read every 15 s: until then it may predate the deliveries
        unclaimed = eth(echo.dev.deployment.coordinator.functions.balanceOf(ETH, address).call())  # type: ignore[union-attr]
        return page if shown == [(address, balance)] and page.by_id.get("unclaimed") == unclaimed else None

    page = wait_until(
        shown, timeout_s=60, what="the page to show the node's status and balance", alive=echo.node.check_alive
    )
    assert int(page.by_id["head"]) == w3.eth.block_number
    assert int(page.by_id["lag"]) < 20
    assert page.containers == {MODEL: "healthy"}
    rows = {row["request"]: row for row in page.jobs}
    for rid in echo.request_ids:
        row = rows[str(rid)]
        assert (row["model"], row["state"]) == (MODEL, "confirmed"), row
        assert 0 < float(row["latency"]) < 30_000, row
    assert f"confirmed {REQUESTS}" in page.by_id["counts"]
    shown_mb = float(page.by_id["rss"].removesuffix(" MB"))
    rss_kib = memory.rss_kib(echo.node.popen.pid)
    assert rss_kib is not None
    rss_mb = rss_kib / 1024
    assert abs(shown_mb - rss_mb) < 0.2 * rss_mb, (shown_mb, rss_mb)  # the node's own resident memory, in MB
    assert page.refreshes >= 2  # it redraws itself from /status, without a reload
    # What the node earns: its registry standing, and the fees of the deliveries, as the chain has them.
    coordinator = echo.dev.deployment.coordinator  # type: ignore[union-attr]
    unclaimed = coordinator.functions.balanceOf(ETH, address).call()
    assert unclaimed > 0
    assert page.checks == dict.fromkeys(CHECKS, "ok"), page.why
    (key,) = page.wallets
    assert (key["registry"], key["stake"]) == ("active", eth(DEVNET_MIN_STAKE_WEI)), key
    assert int(key["covered"]) >= 10, key
    assert page.by_id["unclaimed"] == eth(unclaimed)  # nothing claimed yet: all it earned is still held
    assert page.by_id["earned"] == eth(unclaimed)
    fees = [row["fee"] for row in page.jobs]
    assert all(f.endswith(" ETH") and f != eth(0) for f in fees), fees
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row["seen"]) for row in page.jobs), page.jobs
    assert page.by_id["version"] == f"version {__version__}"
    assert page.by_id["uptime"].startswith("up ")
