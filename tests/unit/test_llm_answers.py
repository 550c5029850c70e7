"""Answer kinds as pure logic: what each checked request turns into, and what a finished answer's text is worth."""

from __future__ import annotations

import json
import random

import pytest

from containers.llm.answers import AnswerKind, AnswerSpec, check_answer, check_schema_keywords
from containers.runtime.model import InputError


def test_a_json_answer_that_does_not_match_its_schema_is_refused_not_returned() -> None:
    spec = check_answer(3, [], 0, 0, json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}}))
    assert spec.value('{"n": 3}') == 0
    with pytest.raises(InputError, match="does not match the schema"):
        spec.value('{"n": "three"}')
    with pytest.raises(InputError, match="does not match the schema"):
        spec.value("{not json")


def test_choice_and_integer_values_are_checked_against_what_was_allowed() -> None:
    choice = check_answer(1, ["yes", "no"], 0, 0, "")
    assert (choice.value("yes"), choice.value("no")) == (0, 1)
    with pytest.raises(InputError, match="not one of allowed"):
        choice.value("maybe")
    integer = check_answer(2, [], -5, 5, "")
    assert integer.value("-5") == -5
    with pytest.raises(InputError, match="outside"):
        integer.value("6")


def test_the_token_cap_fits_the_longest_allowed_answer() -> None:
    rng = random.Random(5)
    for _ in range(200):
        low = rng.randint(-(2**63), 2**63 - 1)
        high = rng.randint(low, 2**63 - 1)
        spec = AnswerSpec(AnswerKind.INTEGER, low=low, high=high)
        assert spec.new_token_cap(0) >= max(len(str(low)), len(str(high))) + 1
        values = tuple({"".join(rng.choice("aé🙂 ") for _ in range(rng.randint(1, 9))) + "x" for _ in range(3)})
        assert AnswerSpec(AnswerKind.CHOICE, allowed=values).new_token_cap(0) > max(len(v.encode()) for v in values)


def test_schema_keywords_are_walked_through_every_place_a_schema_can_sit() -> None:
    ok = {
        "type": "object",
        "title": "x",
        "properties": {"uniqueItems": {"type": "string"}},  # a property named like a keyword is a name
        "$defs": {"a": {"anyOf": [{"type": "integer"}, {"enum": [{"allOf": 1}]}]}},  # enum values are data
        "additionalProperties": False,
        "items": {"prefixItems": [{"const": 1}]},
    }
    check_schema_keywords(ok)
    for path, bad in (
        ("schema.$defs.a.anyOf[1]", {"$defs": {"a": {"anyOf": [{}, {"not": {}}]}}}),
        ("schema.items", {"items": {"contains": {}}}),
        ("schema.additionalProperties", {"additionalProperties": {"dependentRequired": {}}}),
        ("schema.prefixItems[0]", {"prefixItems": [{"multipleOf": 2}]}),
    ):
        with pytest.raises(InputError, match=path.replace("[", r"\[").replace("$", r"\$")):
            check_schema_keywords(bad)
