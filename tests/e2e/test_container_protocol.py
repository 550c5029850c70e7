"""The container protocol as other people's containers speak it, and shutdown as operators do it."""

from __future__ import annotations

import json
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak

from node.devnet import Devnet, free_port, wait_until

pytestmark = pytest.mark.e2e

# A minimal Infernet-style container: speaks only the protocol, knows nothing of Infera, and (like many Infernet
# containers) answers in processed_output. It upper-cases an ABI-encoded string.
INFERNET_CONTAINER = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    from eth_abi.abi import decode, encode

    async def service_output(request):
        body = await request.json()
        (text,) = decode(["string"], bytes.fromhex(body["data"].removeprefix("0x")))
        out = encode(["string"], [text.upper()])
        return web.json_response({"raw_input": "", "processed_input": "", "raw_output": "",
                                  "processed_output": out.hex(), "proof": ""})

    async def health(request):
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/service_output", service_output)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
    """
)


@pytest.fixture
def dev(contracts_built: None, tmp_path: Path) -> Iterator[Devnet]:
    with Devnet(tmp_path) as d:
        yield d


def test_an_infernet_style_container_is_served_unchanged(dev: Devnet, tmp_path: Path) -> None:
    dev.start_anvil()
    dev.deploy()
    script = tmp_path / "infernet_container.py"
    script.write_text(INFERNET_CONTAINER)
    port = free_port()
    container = dev.start("infernet", [sys.executable, str(script), str(port)])
    url = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: _get(f"{url}/health") is not None,
        timeout_s=30,
        what="the Infernet-style container",
        alive=container.check_alive,
    )
    node = dev.start_node(dev.write_node_config({"infernet/upper@1": url}))

    rid = dev.request_raw("infernet/upper@1", encode(["string"], ["hello from a contract"]))
    wait_until(lambda: dev.is_fulfilled(rid), timeout_s=60, what=f"request {rid}", alive=node.check_alive)

    dep = dev.deployment
    assert dep is not None
    (event,) = dep.coordinator.events.RequestFulfilled().get_logs(
        from_block=dep.start_block, argument_filters={"requestId": rid}
    )
    # As Infernet's node delivers it (src/chain/processor.py): all five keys -> abi.encode(bytes raw, bytes processed)
    delivered = encode(["bytes", "bytes"], [b"", encode(["string"], ["HELLO FROM A CONTRACT"])])
    assert event["args"]["outputHash"] == keccak(delivered)


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def _post(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return resp.status, json.loads(resp.read())


def test_sigterm_finishes_the_request_in_flight(dev: Devnet) -> None:
    proc, url = dev.start_container("containers.echo", "--delay-ms", "1500")
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(
            _post, f"{url}/service_output", {"source": 0, "destination": 0, "data": "0x0102", "requires_proof": False}
        )
        wait_until(
            lambda: (_get(f"{url}/info") or {}).get("batching", {}).get("pending") == 1,
            timeout_s=30,
            what="the request to be in flight",
            alive=proc.check_alive,
        )
        assert dev.stop(proc, timeout_s=30) == 0  # SIGTERM, then a clean exit
        status, body = answer.result(timeout=30)
    assert status == 200
    assert body["raw_output"] == "0102"
