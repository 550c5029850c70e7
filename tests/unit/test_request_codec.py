"""How `infera request` and `infera jobs show` read a container's declared ABI (`GET /info`): a malformed one is
refused naming it (never taken as raw bytes), bytes that do not decode say so, and a misspelt model name gets the
configured one meant. The container is a real HTTP server answering the /info under test."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from node.commands.chain_ops import OpsError
from node.commands.request_inference import Codec, ask_codec, unknown_model
from node.config import ModelConfig


@pytest.mark.parametrize(
    ("signature", "types"),
    [("raw bytes", ()), ("(string)", ("string",)), ("(string,uint8)", ("string", "uint8"))],
)
def test_a_declared_abi_is_read(signature: str, types: tuple[str, ...]) -> None:
    assert Codec.parse(signature) == types


@pytest.mark.parametrize("signature", ["5", "string", "(strin)", "(string", "", "(uint7,string)"])
def test_a_malformed_abi_is_refused_naming_it(signature: str) -> None:
    with pytest.raises(ValueError, match="is neither an ABI tuple") as caught:
        Codec.parse(signature)
    assert str(caught.value) == f"{signature!r} is neither an ABI tuple such as (string,uint8) nor 'raw bytes'"


@pytest.fixture
def container() -> Iterator[dict[str, Any]]:
    """A real HTTP server whose `GET /info` answers the dict yielded (changed by the test)."""
    info: dict[str, Any] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(info).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    info["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield info
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("declared", "shown"), [(5, "'5'"), ("string", "'string'")])
def test_a_container_declaring_a_malformed_input_abi_is_refused_naming_it(
    container: dict[str, Any], declared: object, shown: str
) -> None:
    url = container.pop("url")
    container.update({"input_abi": declared, "output_abi": "(string)"})
    model = ModelConfig(name="echo", url=url)
    with pytest.raises(OpsError) as caught:
        ask_codec(model)
    assert str(caught.value) == (
        f"the 'echo' container at {url} declares a malformed input_abi: {shown} is neither an ABI tuple such as"
        " (string,uint8) nor 'raw bytes'"
    )
    container.update({"input_abi": "(string)"})
    assert ask_codec(model).input_types == ("string",)


def test_bytes_that_do_not_decode_say_so() -> None:
    codec = Codec(("string", "uint8"), ())
    assert codec.read_input(b"\x01\x02") == ("0x0102", "not decodable as (string,uint8)")
    assert codec.read_output(b"\xff") == ("0xff", "not UTF-8 text")
    assert codec.read_output("héllo".encode()) == ("héllo", None)


def test_a_misspelt_model_gets_the_configured_one_meant() -> None:
    assert unknown_model("echoo", ["echo", "classify/minilm-sentiment@1"]) == (
        "--model 'echoo' is not in this config's [[models]]; did you mean 'echo'?"
    )
    assert unknown_model("llm/other@1", ["echo"]) is None  # a model only other nodes serve: no guess
