"""The node's REST API as an off-chain client uses it: a real devnet, the node process, an echo container and a
streaming text generator (a tiny random GPT-2 built here), reached over HTTP with bearer tokens."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from eth_abi.abi import encode
from eth_account import Account
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from node.api.eip712 import SECP256K1_N, DelegatedTyping
from node.chain.contracts import CoordinatorAbi, load_artifact, model_id
from node.commands.chain_ops import Reverts, deploy_contract, send_tx
from node.devnet import DEFAULT_FEE_WEI, Devnet, Proc, _http_ok, wait_until
from tests.tiny_models import build_tiny_gpt2

pytestmark = pytest.mark.e2e

ALICE = "alice-token-for-tests-only"
BOB = "bob-token-for-tests-only"
TIGHT = "tight-token-for-tests-only"
ECHO = "echo/api"
GEN = "generate/tiny"


@dataclass
class Api:
    dev: Devnet
    node: Proc
    base: str


@pytest.fixture(scope="module")
def api(contracts_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    work = tmp_path_factory.mktemp("api")
    with Devnet(work) as dev:
        dev.start_anvil()
        dev.deploy()
        _, echo_url = dev.start_container("containers.echo", "--name", ECHO, name="echo")
        gpt2 = build_tiny_gpt2(work / "tiny-gpt2")
        _, gen_url = dev.start_container(
            "containers.generate", "--model-path", str(gpt2), "--name", GEN, "--max-new-tokens", "8", name="gen"
        )
        config = dev.write_node_config({ECHO: echo_url, GEN: {"url": gen_url, "timeout_s": 60}})
        bob_digest = hashlib.sha256(BOB.encode()).hexdigest()
        tight_digest = hashlib.sha256(TIGHT.encode()).hexdigest()
        text = config.read_text().replace("[api]\n", "[api]\nmax_body_bytes = 65536\n", 1)
        text += (
            '\n[[api.tokens]]\nname = "alice"\ntoken_env = "TEST_ALICE_TOKEN"\nrate_per_s = 1000\nburst = 1000\n'
            f'\n[[api.tokens]]\nname = "bob"\ntoken_sha256 = "{bob_digest}"\n'
            f'\n[[api.tokens]]\nname = "tight"\ntoken_sha256 = "{tight_digest}"\nrate_per_s = 0.01\nburst = 2\n'
        )
        config.write_text(text)
        node = dev.start_node(config, env={"TEST_ALICE_TOKEN": ALICE})
        base = f"http://127.0.0.1:{dev.api_port}"
        wait_until(lambda: _http_ok(f"{base}/readyz"), timeout_s=60, what="node /readyz", alive=node.check_alive)
        yield Api(dev, node, base)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(method: str, url: str, *, token: str | None = ALICE, **kwargs: Any) -> tuple[int, Any, Any]:
    headers = {**(auth(token) if token else {}), **kwargs.pop("headers", {})}
    async with aiohttp.ClientSession() as s, s.request(method, url, headers=headers, **kwargs) as r:
        body = await r.json(content_type=None)
        return r.status, body, r.headers


async def wait_done(api: Api, job_id: str, token: str = ALICE, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            async with s.get(f"{api.base}/v1/jobs/{job_id}", headers=auth(token)) as r:
                job: dict[str, Any] = await r.json()
                assert r.status == 200, job
            if job["status"] in ("completed", "failed"):
                return job
            api.node.check_alive()
            await s.get(f"{api.base}/healthz")  # a round trip between polls, not a sleep
    raise AssertionError(f"job {job_id} not finished in {timeout_s} s")


async def events(api: Api, job_id: str, token: str = ALICE) -> list[tuple[str, Any]]:
    """Reads a job's SSE stream to its `done` event."""
    out: list[tuple[str, Any]] = []
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s,
        s.get(f"{api.base}/v1/jobs/{job_id}/events", headers=auth(token)) as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        event = ""
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))
    return out


async def test_info_lists_models_and_is_open(api: Api) -> None:
    status, info, _ = await call("GET", f"{api.base}/info", token=None)
    assert status == 200
    assert info["chain_id"] == 31337
    assert {m["name"] for m in info["models"]} == {ECHO, GEN}
    assert info["nodes"] == [api.dev.node_account.address]


async def test_job_runs_in_the_container_and_is_only_visible_to_its_token(api: Api) -> None:
    status, job, headers = await call("POST", f"{api.base}/v1/jobs", json={"model": ECHO, "input": {"data": "hi"}})
    assert status == 202, job
    assert headers["Location"] == f"/v1/jobs/{job['id']}"
    done = await wait_done(api, job["id"])
    assert done["status"] == "completed"
    assert done["output"] == {"data": "hi"}
    assert done["latency_ms"] > 0
    status, body, _ = await call("GET", f"{api.base}/v1/jobs/{job['id']}", token=BOB)
    assert status == 404
    assert "no job" in body["error"]


async def test_batch_is_all_or_nothing(api: Api) -> None:
    _, before, _ = await call("GET", f"{api.base}/info", token=None)
    bad = {"jobs": [{"model": ECHO, "input": {"data": "a"}}, {"model": "nope", "input": {}}]}
    status, body, _ = await call("POST", f"{api.base}/v1/jobs/batch", json=bad)
    assert status == 422
    assert body["error"].startswith("jobs[1]: unknown model 'nope'")
    assert ECHO in body["error"]  # says what is served
    _, after, _ = await call("GET", f"{api.base}/info", token=None)
    assert after["offchain_jobs_submitted"] == before["offchain_jobs_submitted"]

    good = {"jobs": [{"model": ECHO, "input": {"data": f"item {i}"}} for i in range(5)]}
    status, body, _ = await call("POST", f"{api.base}/v1/jobs/batch", json=good)
    assert status == 202
    outputs = [(await wait_done(api, j["id"]))["output"]["data"] for j in body["jobs"]]
    assert outputs == [f"item {i}" for i in range(5)]


async def test_bad_input_gets_a_4xx_that_says_what_to_fix(api: Api) -> None:
    url = f"{api.base}/v1/jobs"
    status, body, _ = await call("POST", url, data=b"{not json", headers={"Content-Type": "application/json"})
    assert (status, body["error"].startswith("body is not valid JSON")) == (400, True)
    deep = b"[" * 30_000 + b"]" * 30_000  # under api.max_body_bytes; refused before the parser recurses
    status, body, _ = await call("POST", url, data=deep, headers={"Content-Type": "application/json"})
    assert (status, "nested deeper than 128" in body["error"]) == (400, True)
    status, body, _ = await call("POST", url, json={"model": 7, "input": {}})
    assert (status, "model must be a string" in body["error"]) == (422, True)
    status, body, _ = await call("POST", url, json={"model": ECHO, "input": "text"})
    assert (status, "input must be a JSON object" in body["error"]) == (422, True)
    status, body, _ = await call("POST", url, json={"model": ECHO, "input": {"data": "x" * 70_000}})
    assert (status, "api.max_body_bytes" in body["error"]) == (413, True)
    status, body, _ = await call("POST", url, json={"model": ECHO, "input": {"data": "x"}}, token=None)
    assert (status, "missing bearer token" in body["error"]) == (401, True)
    status, body, _ = await call("POST", url, json={"model": ECHO, "input": {"data": "x"}}, token="wrong")
    assert (status, body["error"]) == (401, "unknown bearer token")
    status, body, _ = await call("GET", f"{api.base}/v1/nothing-here")
    assert (status, "no such endpoint" in body["error"]) == (404, True)
    # The container's own refusal (echo refuses empty data): the job fails with its reason, not retried.
    status, job, _ = await call("POST", url, json={"model": ECHO, "input": {"data": ""}})
    done = await wait_done(api, job["id"])
    assert (done["status"], done["attempts"]) == ("failed", 1)
    assert "must not be empty" in done["error"]


async def test_rate_limit_per_token(api: Api) -> None:
    url = f"{api.base}/v1/jobs/unknown"
    codes = [(await call("GET", url, token=TIGHT))[0] for _ in range(3)]
    assert codes == [404, 404, 429]
    status, body, headers = await call("GET", url, token=TIGHT)
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert "rate limit" in body["error"]
    assert (await call("GET", url, token=BOB))[0] == 404  # other tokens are not affected


async def test_generate_streams_token_by_token(api: Api) -> None:
    spec = {"model": GEN, "input": {"prompt": "the node says", "max_new_tokens": 6}}
    status, plain, _ = await call("POST", f"{api.base}/v1/jobs", json=spec)
    assert status == 202
    plain_done = await wait_done(api, plain["id"])
    assert plain_done["status"] == "completed", plain_done

    status, job, _ = await call("POST", f"{api.base}/v1/jobs", json={**spec, "stream": True})
    assert status == 202
    seen = await events(api, job["id"])
    kinds = [k for k, _ in seen]
    assert kinds[0] == "status"
    assert kinds[-2:] == ["output", "done"]
    pieces = [d["token"] for k, d in seen if k == "token"]
    assert len(pieces) >= 2  # piece by piece, not one blob
    output = dict(seen)["output"]["output"]
    assert output["text"] == "".join(pieces)
    assert output["text"] == plain_done["output"]["text"]  # greedy: the same text either way
    # A late subscriber gets the whole story replayed.
    assert [k for k, _ in await events(api, job["id"])] == ["status", *(["token"] * len(pieces)), "output", "done"]


@pytest.fixture(scope="module")
def served_spec(api: Api) -> schemathesis.BaseSchema:
    """The node's /openapi.json: the repo's spec, with only the served models filled in."""
    import urllib.request

    with urllib.request.urlopen(f"{api.base}/openapi.json", timeout=10) as resp:
        served = json.loads(resp.read())
    repo = json.loads((Path(__file__).parents[2] / "node" / "api" / "openapi.json").read_text())
    models = served["components"]["schemas"]["JobSpec"]["properties"]["model"].pop("enum")
    assert sorted(models) == sorted([ECHO, GEN])
    batch = served["paths"]["/v1/jobs/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert batch["properties"]["jobs"].pop("maxItems") == 64  # api.max_batch
    assert served == repo
    return schemathesis.openapi.from_url(f"{api.base}/openapi.json")


def test_api_matches_its_openapi_spec(api: Api, served_spec: schemathesis.BaseSchema) -> None:
    """Schemathesis generates requests for every operation of the served spec (valid and invalid bodies, with and
    without the token) and checks each answer against it: documented status, content type and schema, no 5xx.
    Driven through hypothesis directly: schemathesis's pytest plugin does not load under this pytest."""
    operations = [result.ok() for result in served_spec.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /v1/jobs", "GET /v1/jobs/{job_id}/events"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            # A delegated request can match the schema and still be refused (422): its signature, nonce and
            # balance are checked against the chain, which no schema can express.
            skip = [positive_data_acceptance] if case.operation.path == "/v1/delegated" else []
            case.call_and_validate(base_url=api.base, headers=auth(ALICE), excluded_checks=skip)

        check()


def test_node_log_has_no_token(api: Api) -> None:
    text = Path(api.node.log_path).read_text()
    assert "off-chain job" in text  # the log was written
    assert api.dev.private_key_hex().removeprefix("0x").lower() not in text.lower()
    for secret in (ALICE, BOB, TIGHT):
        assert secret not in text


# ----------------------------------------------------------------------------------------- delegated requests


@dataclass
class Delegation:
    consumer: Any
    signer: Any
    chain_time: int
    nonce: int = 0

    def request(self, input_: bytes, **overrides: Any) -> dict[str, Any]:
        self.nonce += 1
        fields = {
            "consumer": self.consumer.address,
            "modelId": "0x" + model_id(ECHO).hex(),
            "inputHash": "0x" + keccak(input_).hex(),
            "callbackGasLimit": 200_000,
            "redundancy": 1,
            "token": "0x" + "00" * 20,
            "feePerNode": DEFAULT_FEE_WEI,
            "nonce": self.nonce,
            "expiry": self.chain_time + 600,
            "deadline": self.chain_time + 900,
        }
        return {**fields, **overrides}

    def sign(self, req: dict[str, Any], chain_id: int, coordinator: str, key: Any = None) -> str:
        typed = {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "DelegatedRequest": [
                    {"name": n, "type": t}
                    for n, t in [
                        ("consumer", "address"),
                        ("modelId", "bytes32"),
                        ("inputHash", "bytes32"),
                        ("callbackGasLimit", "uint32"),
                        ("redundancy", "uint16"),
                        ("token", "address"),
                        ("feePerNode", "uint256"),
                        ("nonce", "uint256"),
                        ("expiry", "uint64"),
                        ("deadline", "uint64"),
                    ]
                ],
            },
            "primaryType": "DelegatedRequest",
            "domain": {
                "name": "Infera Coordinator",
                "version": "1",
                "chainId": chain_id,
                "verifyingContract": coordinator,
            },
            "message": req,
        }
        signed = Account.sign_typed_data((key or self.signer).key, full_message=typed)
        return "0x" + bytes(signed.signature).hex()


@pytest.fixture(scope="module")
def delegation(api: Api) -> Delegation:
    """The example DelegatedSentiment consumer, its off-chain signer, and 0.01 ETH deposited for its requests."""
    dev = api.dev
    signer = Account.create()
    reverts = Reverts()
    consumer = deploy_contract(
        dev.w3, "DelegatedSentiment", dev.deployer, dev.deployment.coordinator.address, signer.address, reverts=reverts
    )
    send_tx(dev.w3, consumer.functions.fund(), dev.deployer, what="fund", reverts=reverts, value=10 * DEFAULT_FEE_WEI)
    return Delegation(consumer, signer, int(dev.w3.eth.get_block("latest")["timestamp"]))


def delegated_body(api: Api, d: Delegation, req: dict[str, Any], input_: bytes, key: Any = None) -> dict[str, Any]:
    coordinator = api.dev.deployment.coordinator.address
    return {"request": req, "input": "0x" + input_.hex(), "signature": d.sign(req, 31337, coordinator, key)}


async def wait_delegated(api: Api, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, job, _ = await call("GET", f"{api.base}/v1/delegated/{job_id}")
        assert status == 200, job
        if job["status"] in ("completed", "failed"):
            return job
        api.node.check_alive()
    raise AssertionError(f"delegated request {job_id} not finished in {timeout_s} s")


async def test_delegated_request_is_created_and_delivered_in_one_transaction(api: Api, delegation: Delegation) -> None:
    dev = api.dev
    output = encode(["string", "uint256"], ["positive", 987_654])  # the echo container answers with its input
    req = delegation.request(output)
    # The node's EIP-712 digest (its typing read from the ABIs) is the coordinator's.
    coordinator = dev.deployment.coordinator
    as_tuple = tuple(bytes.fromhex(v[2:]) if k in ("modelId", "inputHash") else v for k, v in req.items())
    on_chain = coordinator.functions.delegatedRequestDigest(as_tuple).call()
    typing = DelegatedTyping.from_abi(CoordinatorAbi.from_artifacts(), load_artifact("IDelegatingConsumer").abi)
    assert bytes(on_chain) == typing.digest(
        {k: bytes.fromhex(v[2:]) if k in ("modelId", "inputHash") else v for k, v in req.items()},
        31337,
        coordinator.address,
    )
    body = delegated_body(api, delegation, req, output)
    status, job, headers = await call("POST", f"{api.base}/v1/delegated", json=body)
    assert status == 202, job
    assert headers["Location"] == f"/v1/delegated/{job['id']}"
    # The same signed request again at once (a client retrying): refused, whether it is still in flight or mined.
    status, twin, _ = await call("POST", f"{api.base}/v1/delegated", json=body)
    assert status == 409, twin
    done = await wait_delegated(api, job["id"])
    assert done["status"] == "completed", done
    rid = done["request_id"]
    assert delegation.consumer.functions.labels(rid).call() == "positive"
    assert dev.request_state(rid)["delivered"] == 1
    receipt = dev.w3.eth.get_transaction_receipt(done["tx_hash"])
    assert receipt["from"] == dev.node_account.address
    # The node saw the RequestCreated of its own transaction and left it alone: no second job, no second delivery.
    wait_until(
        lambda: f"request {rid}: created and delivered by this node" in api.node.log_path.read_text(),
        timeout_s=30,
        what="the node to recognise its own delegated request",
        alive=api.node.check_alive,
    )
    # A replay of the same signed request: refused before anything runs.
    status, again, _ = await call("POST", f"{api.base}/v1/delegated", json=body)
    assert status == 409
    assert f"nonce {req['nonce']}" in again["error"]


async def test_bad_delegated_requests_are_refused_with_what_to_fix(api: Api, delegation: Delegation) -> None:
    url = f"{api.base}/v1/delegated"
    data = encode(["string", "uint256"], ["negative", 1])
    intruder = Account.create()
    status, body, _ = await call(
        "POST", url, json=delegated_body(api, delegation, delegation.request(data), data, intruder)
    )
    assert status == 422
    assert "delegatedSigner()" in body["error"]
    expired = delegation.request(data, expiry=delegation.chain_time - 1)
    status, body, _ = await call("POST", url, json=delegated_body(api, delegation, expired, data))
    assert (status, "expired" in body["error"]) == (422, True)
    tampered = delegated_body(api, delegation, delegation.request(data), data)
    tampered["input"] = "0x" + encode(["string", "uint256"], ["positive", 1]).hex()
    status, body, _ = await call("POST", url, json=tampered)
    assert (status, "inputHash is not keccak256(input)" in body["error"]) == (422, True)
    costly = delegation.request(data, feePerNode=100 * DEFAULT_FEE_WEI)  # more than the consumer deposited
    status, body, _ = await call("POST", url, json=delegated_body(api, delegation, costly, data))
    assert (status, "InsufficientBalance" in body["error"]) == (422, True)
    _, before, _ = await call("GET", f"{api.base}/info", token=None)
    unserved = delegation.request(data, modelId="0x" + model_id("not/served@1").hex())
    status, body, _ = await call("POST", url, json=delegated_body(api, delegation, unserved, data))
    assert (status, "is not served here" in body["error"]) == (422, True)
    _, after, _ = await call("GET", f"{api.base}/info", token=None)
    assert after["delegated_requests_accepted"] == before["delegated_requests_accepted"]  # nothing kept
    status, body, _ = await call("POST", url, json={"request": {}, "input": "0x", "signature": "0x"})
    assert (status, "request: missing" in body["error"]) == (422, True)
    malleable = delegated_body(api, delegation, delegation.request(data), data)
    sig = bytes.fromhex(malleable["signature"][2:])
    high_s = (SECP256K1_N - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big")
    malleable["signature"] = "0x" + (sig[:32] + high_s + bytes([55 - sig[64]])).hex()
    status, body, _ = await call("POST", url, json=malleable)
    assert (status, "malleable" in body["error"]) == (422, True)


async def test_api_jobs_are_counted_in_the_metrics(api: Api) -> None:
    """Runs after the jobs above: off-chain and delegated jobs, and their container time, are in /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as s, s.get(f"{api.base}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("infera_api_jobs_total", (("kind", "offchain"), ("status", "completed")))] >= 7
    assert samples[("infera_api_jobs_total", (("kind", "offchain"), ("status", "failed")))] >= 1
    assert samples[("infera_api_jobs_total", (("kind", "delegated"), ("status", "completed")))] == 1
    assert samples[("infera_container_seconds_count", (("model", ECHO), ("outcome", "ok")))] >= 7  # 1 + 5 + 1 delegated
