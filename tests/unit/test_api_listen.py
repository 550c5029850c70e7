"""Where the node's API cannot listen (`node.api.server.start` on a real socket): each case names the key to change,
and is a config error (`infera run` exits 2, which the systemd unit does not restart)."""

from __future__ import annotations

import socket

import pytest

from node.api import server
from node.errors import ConfigError


async def test_an_unresolvable_host_is_named_as_api_host_and_a_taken_port_as_api_port() -> None:
    app = server.waiting_app(lambda: "starting")
    with pytest.raises(ConfigError) as caught:
        await server.start(app, "no-such-host.invalid", 8600)
    assert isinstance(caught.value, server.CannotListen)
    assert str(caught.value).startswith("api.host: 'no-such-host.invalid' does not resolve to an address (")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^api\.port: 127\.0\.0\.1:{port} is already in use"):
            await server.start(server.waiting_app(lambda: "starting"), "127.0.0.1", port)
