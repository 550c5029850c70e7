"""Pipelines on the whole system: real anvil, real contracts, real containers (a tiny random GPT-2 `generate`, the
MiniLM `classify`, `echo`) and the node process. A request for a pipeline is delivered once, with what the second
container answers to the first one's output; a stage's refusal ends in one failure report naming that stage."""

from __future__ import annotations

import json
import sqlite3
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import decode, encode
from prometheus_client.parser import text_string_to_metric_families

from node.commands.chain_ops import Contracts, open_contracts
from node.commands.request_inference import Answer, wait_answer
from node.config import parse_config
from node.devnet import Devnet, Proc, wait_until
from tests.e2e.test_cli_ops import infera, ok
from tests.tiny_models import build_tiny_gpt2

pytestmark = pytest.mark.e2e

GEN = "generate/tiny@1"
CLS = "classify/minilm-sentiment@1"
ECHO = "echo/raw@1"
PIPE = "moderate/generate-classify@1"
ECHO_CLS = "moderate/echo-classify@1"
ANSWER_TIMEOUT_S = 120


@dataclass
class Pipelines:
    dev: Devnet
    node: Proc
    urls: dict[str, str]
    contracts: Contracts
    config: Path


@pytest.fixture(scope="module")
def system(contracts_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipelines]:
    work = tmp_path_factory.mktemp("pipelines")
    with Devnet(work, model_name=CLS) as dev:
        dev.start_anvil()
        dep = dev.deploy()
        gpt2 = build_tiny_gpt2(work / "tiny-gpt2")
        _, gen = dev.start_container(
            "containers.generate", "--model-path", str(gpt2), "--name", GEN, "--max-new-tokens", "8", name="gen"
        )
        _, cls = dev.start_container("containers.classify", name="classify")
        _, echo = dev.start_container("containers.echo", "--name", ECHO, name="echo")
        config = dev.write_node_config(
            {
                GEN: {"url": gen, "timeout_s": 60, "served": False},  # only a stage
                CLS: {"url": cls, "timeout_s": 60},  # served alone too
                ECHO: {"url": echo, "timeout_s": 30, "served": False},
                PIPE: {"pipeline": [GEN, CLS]},
                ECHO_CLS: {"pipeline": [ECHO, CLS], "max_concurrency": 2},
            }
        )
        node = dev.start_node(config)
        urls = {GEN: gen, CLS: cls, ECHO: echo}
        yield Pipelines(dev, node, urls, open_contracts(dev.w3, dep.coordinator.address), config)


def container_output(url: str, input_: bytes) -> bytes:
    """What a container answers to an on-chain input, asked directly over HTTP: its `raw_output` (ABI bytes)."""
    body = json.dumps({"source": 0, "destination": 0, "data": input_.hex(), "requires_proof": False}).encode()
    request = urllib.request.Request(f"{url}/service_output", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return bytes.fromhex(json.loads(resp.read())["raw_output"])


def answer(system: Pipelines, request_id: int) -> Answer:
    found = wait_answer(system.contracts, request_id, from_block=0, timeout_s=ANSWER_TIMEOUT_S)
    system.node.check_alive()
    assert found is not None, f"no answer to request {request_id} within {ANSWER_TIMEOUT_S} s"
    return found


def events(system: Pipelines, name: str, request_id: int) -> list[Any]:
    dep = system.dev.deployment
    assert dep is not None
    return list(
        getattr(dep.coordinator.events, name)().get_logs(
            from_block=dep.start_block, argument_filters={"requestId": request_id}
        )
    )


def job_rows(system: Pipelines, request_id: int) -> list[tuple[str, str]]:
    """(model, state) of the node's job rows for `request_id`, read from its store (read-only, beside the node)."""
    db = sqlite3.connect(f"file:{system.dev.workdir / 'node.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT model, state FROM jobs WHERE request_id=?", (str(request_id),)).fetchall()
    finally:
        db.close()


def stage_counts(system: Pipelines) -> dict[tuple[str, str, str], float]:
    """`infera_pipeline_stages_total` from the node's /metrics: (pipeline, stage, outcome) -> count."""
    with urllib.request.urlopen(f"http://127.0.0.1:{system.dev.api_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.labels["pipeline"], s.labels["stage"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "infera_pipeline_stages"
        for s in family.samples
        if s.name == "infera_pipeline_stages_total"
    }


def test_a_pipeline_delivers_the_second_stage_answer_to_the_first_stage_output_once(system: Pipelines) -> None:
    input_ = encode(["string", "uint32"], ["a node runs the model", 8])
    # What the two containers answer when chained by hand, asked before the request so no other call is batched in.
    generated = container_output(system.urls[GEN], input_)
    (text,) = decode(["string"], generated)
    assert text.strip(), "the tiny GPT-2 generated no text for this prompt: pick another one"
    expected = container_output(system.urls[CLS], generated)
    label, score = decode(["string", "uint256"], expected)
    assert label in ("positive", "negative")
    assert 0 <= score <= 1_000_000

    rid = system.dev.request_raw(PIPE, input_)
    got = answer(system, rid)
    assert got.failure is None
    assert got.output == expected  # read from the delivery's calldata, checked against the on-chain outputHash

    assert len(events(system, "RequestFulfilled", rid)) == 1
    assert events(system, "FailureReported", rid) == []
    assert system.dev.request_state(rid)["delivered"] == 1
    # One job for the whole pipeline, confirmed: not one per stage.
    wait_until(
        lambda: job_rows(system, rid) == [(PIPE, "confirmed")],
        timeout_s=60,
        what=f"request {rid}'s one job row to be confirmed",
        alive=system.node.check_alive,
    )
    counts = stage_counts(system)
    assert counts[(PIPE, GEN, "ok")] >= 1
    assert counts[(PIPE, CLS, "ok")] >= 1


def test_a_second_stage_refusal_ends_in_one_failure_report_naming_the_stage(system: Pipelines) -> None:
    blank = encode(["string"], ["   "])  # echo passes it on; classify refuses a blank text (400)
    assert container_output(system.urls[ECHO], blank) == blank
    rid = system.dev.request_raw(ECHO_CLS, blank)
    got = answer(system, rid)
    assert got.output is None
    assert got.failure == f"stage 2/2 {CLS}: container rejected the input: text must be a non-empty string"
    reports = events(system, "FailureReported", rid)
    assert len(reports) == 1
    assert reports[0]["args"]["node"] == system.dev.node_account.address
    assert events(system, "RequestFulfilled", rid) == []
    state = system.dev.request_state(rid)
    assert (state["failures"], state["delivered"]) == (1, 0)
    wait_until(
        lambda: job_rows(system, rid) == [(ECHO_CLS, "failed")],  # settled once its report is mined
        timeout_s=60,
        what=f"request {rid}'s one job row to be settled by its failure report",
        alive=system.node.check_alive,
    )
    assert stage_counts(system)[(ECHO_CLS, CLS, "refused")] == 1


def test_a_first_stage_refusal_names_the_first_stage_and_a_stage_only_model_is_left_alone(
    system: Pipelines,
) -> None:
    stage_only = system.dev.request_raw(GEN, encode(["string", "uint32"], ["hello", 4]))  # `served = false`
    rid = system.dev.request_raw(PIPE, encode(["string", "uint32"], ["hello", 0]))  # generate refuses 0 tokens
    got = answer(system, rid)
    assert got.failure is not None
    assert got.failure.startswith(f"stage 1/2 {GEN}: container rejected the input: max_new_tokens must be")
    assert len(events(system, "FailureReported", rid)) == 1
    # The stage-only request's block came before: the node has read past it, and served it neither way.
    assert events(system, "RequestFulfilled", stage_only) == []
    assert events(system, "FailureReported", stage_only) == []
    assert job_rows(system, stage_only) == []
    system.node.check_alive()


def test_infera_request_encodes_for_the_first_stage_and_decodes_with_the_last(system: Pipelines) -> None:
    input_ = encode(["string", "uint32"], ["smart contracts ask for inference", 6])
    expected = container_output(system.urls[CLS], container_output(system.urls[GEN], input_))
    label, score = decode(["string", "uint256"], expected)
    result = infera(
        *("request", "--config", str(system.config), "--model", PIPE, "--input-hex", input_.hex()),
        *("--key-env", "USER_KEY", "--timeout", str(ANSWER_TIMEOUT_S), "--json"),
        env={"USER_KEY": system.dev.user.key.hex()},
    )
    got = json.loads(ok(result))
    assert got["output_hex"] == "0x" + expected.hex()
    assert got["output"] == {"label": label, "scoreE6": score}  # the classify stage's output names


def test_config_check_warns_about_a_stage_whose_output_the_next_stage_cannot_take(system: Pipelines) -> None:
    from node.commands.config_check import Report, check_pipelines

    data = tomllib.loads(system.config.read_text())
    data["models"].append({"name": "backwards@1", "pipeline": [CLS, GEN]})
    report = Report()
    check_pipelines(parse_config(data), report)  # the node's two pipelines fit (echo's raw bytes fit anything)
    assert report.warnings == [
        f"models[5].pipeline[1]: {CLS} answers (string,uint256) but {GEN} takes (string,uint32): every request"
        " would fail at that stage"
    ]
