"""Solidity consumers ask the packaged LLM on a real anvil, the node answers on-chain: a yes/no moderation verdict
from allowed values and a 1-10 score from an integer range, each equal to the container's own answer for the same
input bytes; an input the model cannot answer ends in one failure report naming the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from web3.contract import Contract

from containers.llm.model import DEFAULT_NAME, LLMModel
from node.chain.contracts import model_id
from node.devnet import Devnet, Proc, wait_until
from node.devnet.system import DEFAULT_FEE_WEI

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

LLM = DEFAULT_NAME
INPUT_TYPES = list(LLMModel.input_types)
ANSWER_TIMEOUT_S = 120


@dataclass
class LLMSystem:
    dev: Devnet
    node: Proc
    url: str
    moderation: Contract
    score: Contract


@pytest.fixture(scope="module")
def llm_system(contracts_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMSystem]:
    with Devnet(tmp_path_factory.mktemp("llm")) as dev:
        dev.start_anvil()
        deployment = dev.deploy()
        _, url = dev.start_container("containers.llm", "--max-context", "1024", timeout_s=300)
        config = dev.write_node_config({LLM: {"url": url, "timeout_s": 120}})
        node = dev.start_node(config)
        coordinator = deployment.coordinator.address
        moderation = dev._deploy("LLMModeration", coordinator, model_id(LLM))
        score = dev._deploy("LLMScore", coordinator, model_id(LLM))
        yield LLMSystem(dev, node, url, moderation, score)


def _request_input(system: LLMSystem, request_id: int) -> bytes:
    """The input bytes of `request_id`, as its RequestCreated event carries them."""
    dep = system.dev.deployment
    assert dep is not None
    logs = dep.coordinator.events.RequestCreated().get_logs(
        from_block=dep.start_block, argument_filters={"requestId": request_id}
    )
    assert len(logs) == 1
    return bytes(logs[0]["args"]["input"])


def _offline_answer(system: LLMSystem, raw: bytes) -> tuple[str, int]:
    """What the container answers for these input bytes, asked directly (no chain, no node)."""
    body = {"source": 0, "destination": 0, "data": raw.hex()}
    answer = requests.post(f"{system.url}/service_output", json=body, timeout=120).json()
    text, value = abi_decode(["string", "int256"], bytes.fromhex(answer["raw_output"].removeprefix("0x")))
    return str(text), int(value)


def _fulfilled(system: LLMSystem, request_id: int) -> list[Any]:
    dep = system.dev.deployment
    assert dep is not None
    return list(
        dep.coordinator.events.RequestFulfilled().get_logs(
            from_block=dep.start_block, argument_filters={"requestId": request_id}
        )
    )


def test_a_moderation_verdict_from_allowed_values_is_the_containers_answer(llm_system: LLMSystem) -> None:
    dev = llm_system.dev
    texts = ["WIN A FREE IPHONE!!! Click here now to claim your prize", "The community call moved to Thursday 3pm"]
    ids = [
        dev.request_id_of(dev._transact(llm_system.moderation.functions.check(t), dev.user, DEFAULT_FEE_WEI))
        for t in texts
    ]
    for rid in ids:
        verdict = wait_until(
            lambda rid=rid: (v := llm_system.moderation.functions.verdicts(rid).call()) and v[0] and v,
            timeout_s=ANSWER_TIMEOUT_S,
            what=f"the moderation verdict of request {rid}",
            alive=llm_system.node.check_alive,
        )
        text, value = _offline_answer(llm_system, _request_input(llm_system, rid))
        assert text in ("yes", "no")
        assert verdict[1] == (text == "yes")  # flagged exactly when the model said yes
        assert value == ["yes", "no"].index(text)
        events = _fulfilled(llm_system, rid)
        assert len(events) == 1
        assert events[0]["args"]["callbackOk"]


def test_a_score_in_range_is_the_containers_answer(llm_system: LLMSystem) -> None:
    dev = llm_system.dev
    rid = dev.request_id_of(
        dev._transact(
            llm_system.score.functions.score("An excellent, clear and well-argued proposal."), dev.user, DEFAULT_FEE_WEI
        )
    )
    stored = wait_until(
        lambda: llm_system.score.functions.scores(rid).call() or None,
        timeout_s=ANSWER_TIMEOUT_S,
        what=f"the score of request {rid}",
        alive=llm_system.node.check_alive,
    )
    text, value = _offline_answer(llm_system, _request_input(llm_system, rid))
    assert 1 <= stored <= 10
    assert stored == value == int(text)
    assert len(_fulfilled(llm_system, rid)) == 1


def test_an_input_the_model_cannot_answer_ends_in_one_failure_report_naming_it(llm_system: LLMSystem) -> None:
    dev = llm_system.dev
    dep = dev.deployment
    assert dep is not None
    bad_range = abi_encode(INPUT_TYPES, ["", ["Score it"], 2, [], 10, 1, "", 0])
    no_values = abi_encode(INPUT_TYPES, ["", ["Spam?"], 1, [], 0, 0, "", 0])
    for raw, reason in ((bad_range, "min (10) is greater than max (1)"), (no_values, "non-empty allowed list")):
        rid = dev.request_raw(LLM, raw)
        reports = wait_until(
            lambda rid=rid: (
                dep.coordinator.events.FailureReported().get_logs(
                    from_block=dep.start_block, argument_filters={"requestId": rid}
                )
                or None
            ),
            timeout_s=ANSWER_TIMEOUT_S,
            what=f"the failure report for request {rid}",
            alive=llm_system.node.check_alive,
        )
        assert len(reports) == 1
        assert reason in reports[0]["args"]["reason"]
        assert not _fulfilled(llm_system, rid)


def test_infera_request_sends_json_fields_and_prints_the_decoded_answer(llm_system: LLMSystem) -> None:
    dev = llm_system.dev
    config = dev.workdir / "node.toml"
    fields = {"messages": ["Is 'FREE MONEY, click now' spam?"], "answer": 1, "allowed": ["yes", "no"]}
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "request", "--config", str(config), "--model", LLM, "--input-json",
         json.dumps(fields), "--key-env", "USER_KEY", "--timeout", "120", "--json"],
        capture_output=True, text=True, env={**os.environ, "USER_KEY": dev.user.key.hex()}, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    text, value = _offline_answer(llm_system, _request_input(llm_system, int(answer["request_id"])))
    assert answer["output"] == {"text": text, "value": value}
    assert text in ("yes", "no")
    bad = subprocess.run(
        [sys.executable, "-m", "node.cli", "request", "--config", str(config), "--model", LLM, "--input-json",
         '{"mesages": ["typo"]}', "--key-env", "USER_KEY"],
        capture_output=True, text=True, env={**os.environ, "USER_KEY": dev.user.key.hex()}, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "unknown field(s) mesages; missing field(s) messages" in bad.stderr
