"""`[[models]] pipeline = [...]`: the shapes the config takes, the ones it refuses (one line per bad key, as
`infera config check` prints them), and a seeded fuzz of random shapes against an independent oracle."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from node.config import CONTAINER_KEYS, ModelConfig, NodeConfig, config_problems

ADDRESS = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
GEN, CLS, PIPE = "generate/tiny@1", "classify/minilm@1", "moderate/generate-classify@1"


def config(*models: dict[str, Any]) -> dict[str, Any]:
    return {"chain": {"rpc_url": "http://127.0.0.1:8545", "coordinator_address": ADDRESS}, "models": list(models)}


def container(name: str, **keys: Any) -> dict[str, Any]:
    return {"name": name, "url": f"http://127.0.0.1:1/{name}", **keys}


def problems(*models: dict[str, Any]) -> list[str]:
    cfg, found = config_problems(config(*models))
    assert (cfg is None) == bool(found)
    return found


# ------------------------------------------------------------------------------------------------- accepted shapes


def test_a_pipeline_of_two_containers_loads_with_its_stages_resolved() -> None:
    cfg, found = config_problems(
        config(
            container(GEN, served=False, timeout_s=60),
            container(CLS),
            {"name": PIPE, "pipeline": [GEN, CLS], "max_concurrency": 2, "accepted_payments": {"ETH": 5}},
        )
    )
    assert found == []
    assert cfg is not None
    pipe = cfg.model(PIPE)
    assert pipe is not None
    assert pipe.pipeline == [GEN, CLS]
    assert pipe.served
    assert pipe.minimum_fee("0x" + "00" * 20) == 5
    assert [m.name for m in cfg.stages(pipe)] == [GEN, CLS]
    assert [m.timeout_s for m in cfg.stages(pipe)] == [60, 30]  # each stage keeps its own container settings
    assert cfg.stages(cfg.models[1]) == [cfg.models[1]]  # a container is its own one stage
    assert cfg.model(GEN) is not None
    assert not cfg.models[0].served


def test_a_stage_may_repeat_and_be_served_alone_and_in_several_pipelines() -> None:
    assert (
        problems(
            container("echo"),
            container(CLS),
            {"name": "twice@1", "pipeline": ["echo", "echo", CLS]},
            {"name": "other@1", "pipeline": ["echo", CLS]},
        )
        == []
    )


def test_a_pipeline_may_list_its_stages_before_they_are_defined() -> None:
    assert problems({"name": PIPE, "pipeline": [GEN, CLS]}, container(GEN, served=False), container(CLS)) == []


# ------------------------------------------------------------------------------------------------ refused shapes


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        (
            [container(GEN), {"name": PIPE, "pipeline": [GEN, "classify/nope@1"]}],
            [
                r"^models\.1\.pipeline\.1: 'classify/nope@1' is not the name of a \[\[models\]\] entry \(entries with a"
                r" container: generate/tiny@1\)$"
            ],
        ),
        (
            [container(GEN), {"name": PIPE, "pipeline": [GEN, PIPE]}],
            [r"^models\.1\.pipeline\.1: 'moderate/generate-classify@1' is this pipeline itself: a cycle"],
        ),
        (
            [
                container(GEN),
                container(CLS),
                {"name": "a", "pipeline": [GEN, "b"]},
                {"name": "b", "pipeline": [CLS, "a"]},
            ],
            [
                r"^models\.2\.pipeline\.1: 'b' is itself a pipeline, and pipelines do not nest: list its stages here"
                r" instead \(classify/minilm@1, a\)$",
                r"^models\.3\.pipeline\.1: 'a' is itself a pipeline, and pipelines do not nest",
            ],
        ),
        (
            [container(GEN), {"name": PIPE, "pipeline": [GEN]}],
            [r"^models\.1\.pipeline: a pipeline chains 2 or more stages, got 1"],
        ),
        ([container(GEN), {"name": PIPE, "pipeline": []}], [r"^models\.1\.pipeline: .* got 0"]),
        (
            [container(GEN), container(CLS), {"name": PIPE, "pipeline": [GEN, CLS], "attests": True}],
            [r"^models\.2\.attests: a pipeline cannot attest"],
        ),
        (
            [container(GEN), container(CLS), {"name": PIPE, "pipeline": [GEN, CLS], "served": False}],
            [r"^models\.2\.served: a pipeline cannot be a stage"],
        ),
        (
            [container(GEN), container(CLS), container("unused", served=False), {"name": PIPE, "pipeline": [GEN, CLS]}],
            [r"^models\.2\.served: false, but no pipeline names 'unused' as a stage: the entry serves nothing$"],
        ),
        ([container(GEN), {"name": PIPE, "pipeline": [GEN, ""]}], [r"^models\.1\.pipeline\.1: String should have"]),
        ([container(GEN), {"name": PIPE, "pipeline": "generate/tiny@1"}], [r"^models\.1\.pipeline: Input should be"]),
    ],
    ids=[
        "unknown",
        "self",
        "nested",
        "one-stage",
        "no-stage",
        "attests",
        "pipeline-not-served",
        "unused-stage",
        "empty-name",
        "not-a-list",
    ],
)
def test_a_bad_pipeline_is_refused_naming_its_key(models: list[dict[str, Any]], expected: list[str]) -> None:
    found = problems(*models)
    assert len(found) == len(expected), found
    for line, pattern in zip(found, expected, strict=True):
        assert re.search(pattern, line), line


def test_each_container_key_on_a_pipeline_is_its_own_line() -> None:
    pipe = {
        "name": PIPE,
        "pipeline": [GEN, CLS],
        "transport": "http",
        "url": "http://127.0.0.1:1",
        "timeout_s": 5,
        "max_attempts": 2,
        "retry_backoff_s": 0.5,
        "max_dispatches": 2,
        "attests": True,
    }
    found = problems(container(GEN), container(CLS), pipe)
    assert found == [
        *(
            f"models.2.{key}: a pipeline has no container of its own: set it on the [[models]] entries of its stages"
            for key in CONTAINER_KEYS
        ),
        "models.2.attests: a pipeline cannot attest: no one container signs its output (stages are called without an"
        " attestation); serve attestation-verified requests from a single model",
    ]


def test_a_pipeline_over_mqtt_stages_still_needs_the_broker_section() -> None:
    found = problems(container(GEN), {"name": CLS, "transport": "mqtt"}, {"name": PIPE, "pipeline": [GEN, CLS]})
    assert found == ["(root): Value error, models classify/minilm@1 use transport mqtt but there is no [mqtt] section"]


def test_the_cli_check_prints_one_line_per_bad_key(tmp_path: Any) -> None:
    from node.commands.config_check import parse_file

    path = tmp_path / "node.toml"
    path.write_text(
        f'[chain]\nrpc_url = "http://127.0.0.1:8545"\ncoordinator_address = "{ADDRESS}"\n\n'
        f'[[models]]\nname = "{GEN}"\nurl = "http://127.0.0.1:1"\n\n'
        f'[[models]]\nname = "{PIPE}"\npipeline = ["{GEN}", "nope", "{PIPE}"]\n'
    )
    cfg, found = parse_file(path)
    assert cfg is None
    assert [line.split(":")[0] for line in found] == ["models.1.pipeline.1", "models.1.pipeline.2"]


# ---------------------------------------------------------------------------------------------------- fuzzing


def _valid(models: list[dict[str, Any]]) -> bool:
    """The oracle: whether a shape (as `_shape` draws them) is a config the node can serve, written apart from the
    config module's own checks."""
    names = [m["name"] for m in models]
    containers = {m["name"] for m in models if "pipeline" not in m}
    staged = {s for m in models for s in m.get("pipeline", [])}
    for m in models:
        if "pipeline" in m:
            stages = m["pipeline"]
            if len(stages) < 2 or any(s not in containers for s in stages):  # unknown, itself, or a pipeline
                return False
            if set(m) & set(CONTAINER_KEYS) or m.get("attests") or m.get("served") is False:
                return False
        elif m.get("served") is False and m["name"] not in staged:
            return False
    return len(set(names)) == len(names)


#: A valid value of each container key, for the fuzz to set on a pipeline.
CONTAINER_VALUES = {
    "transport": "http",
    "url": "http://127.0.0.1:2",
    "timeout_s": 5,
    "max_attempts": 2,
    "retry_backoff_s": 0.5,
    "max_dispatches": 2,
}


def _shape(rng: random.Random) -> list[dict[str, Any]]:
    """A random `[[models]]` list: containers and pipelines whose stages are mostly containers, sometimes a
    stranger's name, a pipeline (the pipeline's own name included); some with keys a pipeline must not have, some
    entries not served."""
    n = rng.randint(1, 5)
    names = [f"m{i}" for i in range(n)]
    pipelines = {name for name in names if rng.random() < 0.4}
    containers = [name for name in names if name not in pipelines] or ["stranger"]
    models: list[dict[str, Any]] = []
    for name in names:
        if name in pipelines:
            entry: dict[str, Any] = {"name": name, "pipeline": []}
            for _ in range(rng.choice([0, 1, 2, 2, 2, 3, 3])):
                odd = rng.random() < 0.15
                entry["pipeline"].append(rng.choice([*names, "stranger"]) if odd else rng.choice(containers))
            if rng.random() < 0.15:
                key = rng.choice(CONTAINER_KEYS)
                entry[key] = CONTAINER_VALUES[key]
        else:
            entry = container(name)
        if rng.random() < 0.08:
            entry["attests"] = True
        if rng.random() < 0.2:
            entry["served"] = False
        models.append(entry)
    return models


@pytest.mark.parametrize("seed", range(400))
def test_fuzzed_shapes_load_exactly_when_the_oracle_accepts_them(seed: int) -> None:
    rng = random.Random(seed)
    models = _shape(rng)
    cfg, found = config_problems(config(*models))  # never raises, whatever the shape
    assert (cfg is not None) == _valid(models), (models, found)
    if cfg is None:
        for line in found:  # each line names one key of the file: models.<i>.<key>[.<j>]
            assert re.match(r"^models\.\d+\.(pipeline(\.\d+)?|served|attests|" + "|".join(CONTAINER_KEYS) + "): ", line)
        return
    for m in cfg.models:  # what the node relies on once a config loads
        stages = cfg.stages(m)
        assert all(isinstance(s, ModelConfig) and s.pipeline is None for s in stages)
        assert m.pipeline is None or (len(stages) >= 2 and not m.attests and m.served)
        assert m.served or any(m.name in (p.pipeline or ()) for p in cfg.models)
    assert isinstance(cfg, NodeConfig)
