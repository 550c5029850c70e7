"""A deeply nested JSON body is a 400, never a crash: py_ecc (imported through eth_account) raises the recursion limit
to 100,000, so an unguarded parse of 99,000 brackets overflows the C stack (a segfault, exit 139). The server runs in
a child process, so a regression kills it rather than the test session."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from containers.runtime.wire import MAX_JSON_DEPTH, parse_json
from node.devnet.processes import free_port, http_ok, wait_until
from tests.integration.conftest import on_chain

DEEP = b"[" * 99_000 + b"]" * 99_000


def post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def serve(module: str, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m containers.<module>` on a free port until its /health is 200; stopped afterwards."""
    port = free_port()
    argv = [sys.executable, "-m", f"containers.{module}", "--port", str(port), *args]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"{module} server exited {proc.returncode}")

    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(url + "/health"), timeout_s=120, what=f"the {module} container", alive=alive)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def echo_process() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    yield from serve("echo")


@pytest.fixture(scope="module")
def generate_process(tiny_gpt2: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    yield from serve("generate", "--model-path", str(tiny_gpt2), "--device", "cpu", "--max-new-tokens", "4")


@pytest.mark.parametrize("path", ["/service_output", "/service_output/batch"])
def test_a_99000_deep_body_is_a_400_and_the_server_keeps_serving(
    echo_process: tuple[str, subprocess.Popen[bytes]], path: str
) -> None:
    url, proc = echo_process
    body = DEEP if path == "/service_output" else b'{"requests": [' + DEEP + b"]}"
    status, answer = post(url + path, body)
    assert proc.poll() is None, "the server died"
    assert status == 400
    assert f"nested deeper than {MAX_JSON_DEPTH}" in str(answer["error"])
    assert http_ok(url + "/health")
    # and an ordinary request still works
    status, answer = post(url + "/service_output", json.dumps(on_chain(b"hi")).encode())
    assert (status, proc.poll()) == (200, None)


def test_a_99000_deep_body_on_every_route_of_a_streaming_model(
    generate_process: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, proc = generate_process
    for path in ("/service_output", "/service_output/batch", "/service_output/stream"):
        status, answer = post(url + path, DEEP)
        assert (status, proc.poll()) == (400, None), path
        assert f"nested deeper than {MAX_JSON_DEPTH}" in str(answer["error"])
    assert http_ok(url + "/health")


def test_the_depth_check_counts_brackets_not_characters_in_strings() -> None:
    inside_strings = json.dumps({"text": "[" * 10_000 + "{" * 10_000, "list": [[[1]]]})
    assert parse_json(inside_strings)["list"] == [[[1]]]
    flat = "[" + ",".join(["[]"] * 10_000) + "]"
    assert len(parse_json(flat)) == 10_000
    just_fits = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(just_fits) == parse_json(just_fits.encode())
    with pytest.raises(ValueError, match="nested deeper"):
        parse_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    with pytest.raises(ValueError, match="nested deeper"):
        parse_json('{"a":' * 300_000 + "1" + "}" * 300_000)
