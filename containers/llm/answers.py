"""Answer kinds a contract can act on, and the grammars that guarantee them (xgrammar).

Kinds (the `answer` field of the input ABI): 0 TEXT, free text; 1 CHOICE, exactly one of `allowed`; 2 INTEGER, a
decimal integer in `[min, max]`; 3 JSON, a JSON document that matches the JSON Schema in `schema`. The grammars are
xgrammar's (EBNF for CHOICE, its JSON-Schema converter for INTEGER and JSON): the decoder masks every token the
grammar does not allow, so no other answer can come out. `check_answer` raises `InputError` for a request that
cannot be answered (empty or oversized lists, min > max, a schema that does not parse), before anything runs.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from containers.runtime.model import InputError

#: Limits on CHOICE: values per request, and characters per value.
MAX_ALLOWED_VALUES = 64
MAX_VALUE_CHARS = 64
#: INTEGER bounds must fit a signed 64-bit integer (the grammar's digits; Solidity's int64).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: Characters of a JSON Schema.
MAX_SCHEMA_CHARS = 8192
#: JSON Schema keywords the decoder enforces token by token (xgrammar's converter), and annotations that constrain
#: nothing. A schema with any other keyword (uniqueItems, allOf, not, if/then, format, a remote $ref, ...) is
#: refused: the grammar would ignore it and return JSON that does not match.
ENFORCED_KEYWORDS = frozenset(
    {
        "type", "enum", "const", "properties", "required", "additionalProperties", "items", "prefixItems",
        "minItems", "maxItems", "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "anyOf", "oneOf", "$ref", "$defs", "definitions",
    }
)  # fmt: skip
ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
     "writeOnly"}
)  # fmt: skip


class AnswerKind(IntEnum):
    """The `answer` field of a request."""

    TEXT = 0
    CHOICE = 1
    INTEGER = 2
    JSON = 3


@dataclass(frozen=True)
class AnswerSpec:
    """A checked answer request: its kind, and the allowed values, bounds or schema it uses."""

    kind: AnswerKind
    allowed: tuple[str, ...] = ()
    low: int = 0
    high: int = 0
    schema: str = ""

    def grammar_source(self) -> tuple[str, str] | None:
        """`("ebnf" | "json_schema", text)` for the constrained kinds, None for TEXT."""
        if self.kind is AnswerKind.CHOICE:
            return "ebnf", "root ::= " + " | ".join(_ebnf_literal(v) for v in self.allowed)
        if self.kind is AnswerKind.INTEGER:
            return "json_schema", json.dumps({"type": "integer", "minimum": self.low, "maximum": self.high})
        if self.kind is AnswerKind.JSON:
            return "json_schema", self.schema
        return None

    def instruction(self) -> str:
        """The line appended to the last user turn so the model knows the form its answer must take."""
        if self.kind is AnswerKind.CHOICE:
            return "Answer with exactly one of: " + ", ".join(self.allowed) + "."
        if self.kind is AnswerKind.INTEGER:
            return f"Answer with one whole number from {self.low} to {self.high}."
        if self.kind is AnswerKind.JSON:
            return "Answer with JSON that matches this JSON Schema: " + self.schema
        return ""

    def new_token_cap(self, asked: int) -> int:
        """Tokens this answer may take: what the request asked for, or, for CHOICE and INTEGER, enough for the
        longest allowed answer spelled a character a token, plus the stop token (the grammar ends it sooner)."""
        if self.kind is AnswerKind.CHOICE:
            return max(len(v.encode()) for v in self.allowed) + 1
        if self.kind is AnswerKind.INTEGER:
            return max(len(str(self.low)), len(str(self.high))) + 1
        return asked

    def value(self, text: str) -> int:
        """The `value` output field: the index of the chosen value (CHOICE), the integer (INTEGER), else 0. Raises
        `InputError` when the text is not what the grammar allowed (a JSON answer is checked against its schema
        here too, by jsonschema-rs): the request cannot be answered, retrying gives the same bytes."""
        if self.kind is AnswerKind.CHOICE:
            if text not in self.allowed:
                raise InputError(f"the answer {text!r} is not one of allowed (a value the tokenizer cannot spell?)")
            return self.allowed.index(text)
        if self.kind is AnswerKind.INTEGER:
            try:
                number = int(text)
            except ValueError:
                raise InputError(f"the answer {text!r} is not an integer") from None
            if not self.low <= number <= self.high:
                raise InputError(f"the answer {number} is outside [{self.low}, {self.high}]")
            return number
        if self.kind is AnswerKind.JSON:
            import jsonschema_rs

            try:
                jsonschema_rs.validator_for(json.loads(self.schema)).validate(json.loads(text))
            except (ValueError, jsonschema_rs.ValidationError) as exc:
                reason = str(exc).split("\n", 1)[0]
                raise InputError(f"the JSON answer does not match the schema: {reason}") from None
        return 0


def _ebnf_literal(value: str) -> str:
    """A GBNF/EBNF string literal for `value` (backslash and double quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_string(value: Any, field: str) -> str:
    """`value` if it is a string that UTF-8 can encode (no lone surrogates from JSON's \\uD800 escapes); raises
    `InputError` naming `field` otherwise."""
    if not isinstance(value, str):
        raise InputError(f"{field} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{field} is not valid Unicode (a lone surrogate)") from None
    return value


def check_schema_keywords(schema: Any, where: str = "schema") -> None:
    """Raises `InputError` naming the first keyword the decoder would not enforce (see `ENFORCED_KEYWORDS`), or a
    `$ref` that is not local (`#/...`): nothing is ever fetched."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise InputError(f"{where} must be a JSON Schema object or boolean")
    for key, value in schema.items():
        if key not in ENFORCED_KEYWORDS and key not in ANNOTATIONS:
            raise InputError(
                f"{where} uses {key!r}, which the decoder does not enforce; use only "
                + ", ".join(sorted(ENFORCED_KEYWORDS))
            )
        if key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
            raise InputError(f"{where}.$ref must be local (#/...): nothing is fetched")
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            for name, sub in value.items():
                check_schema_keywords(sub, f"{where}.{key}.{name}")
        elif key in ("items", "additionalProperties") and not isinstance(value, bool):
            check_schema_keywords(value, f"{where}.{key}")
        elif key in ("prefixItems", "anyOf", "oneOf") and isinstance(value, list):
            for i, sub in enumerate(value):
                check_schema_keywords(sub, f"{where}.{key}[{i}]")


def check_answer(
    kind: Any, allowed: Any, low: Any, high: Any, schema: Any, special: frozenset[str] = frozenset()
) -> AnswerSpec:
    """Validates the answer fields of one request; raises `InputError` naming the field and what to send.
    `special`: the tokenizer's special-token strings, which no allowed value may contain."""
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise InputError(f"answer must be the integer 0 (text), 1 (choice), 2 (integer) or 3 (json), got {kind!r}")
    try:
        answer = AnswerKind(kind)
    except ValueError:
        raise InputError(f"answer must be 0 (text), 1 (choice), 2 (integer) or 3 (json), got {kind!r}") from None
    if answer is AnswerKind.CHOICE:
        if not isinstance(allowed, list | tuple):
            raise InputError(f"allowed must be a list of strings, got {type(allowed).__name__}")
        values = tuple(allowed)
        if not values:
            raise InputError("answer 1 (choice) needs a non-empty allowed list")
        if len(values) > MAX_ALLOWED_VALUES:
            raise InputError(f"allowed has {len(values)} values; the limit is {MAX_ALLOWED_VALUES}")
        for i, value in enumerate(values):
            if not check_string(value, f"allowed[{i}]").strip():
                raise InputError(f"allowed[{i}] must be a non-empty string")
            if len(value) > MAX_VALUE_CHARS:
                raise InputError(f"allowed[{i}] is {len(value)} characters; the limit is {MAX_VALUE_CHARS}")
            if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
                raise InputError(f"allowed[{i}] contains a control character")
            if marker := next((t for t in special if t in value), None):
                raise InputError(f"allowed[{i}] contains the model's special token {marker!r}")
        if len(set(values)) != len(values):
            raise InputError("allowed has a value twice; each value must be unique")
        return AnswerSpec(answer, allowed=values)
    if answer is AnswerKind.INTEGER:
        for name, bound in (("min", low), ("max", high)):
            if isinstance(bound, bool) or not isinstance(bound, int) or not INT_MIN <= bound <= INT_MAX:
                raise InputError(f"{name} must be an integer that fits int64, got {bound!r}")
        if low > high:
            raise InputError(f"min ({low}) is greater than max ({high})")
        return AnswerSpec(answer, low=low, high=high)
    if answer is AnswerKind.JSON:
        if not isinstance(schema, str) or not check_string(schema, "schema").strip():
            raise InputError("answer 3 (json) needs a JSON Schema in schema")
        if len(schema) > MAX_SCHEMA_CHARS:
            raise InputError(f"schema is {len(schema)} characters; the limit is {MAX_SCHEMA_CHARS}")
        try:
            parsed = json.loads(schema)
        except ValueError as exc:
            raise InputError(f"schema is not valid JSON: {exc}") from None
        check_schema_keywords(parsed)
        import jsonschema_rs

        try:
            jsonschema_rs.validator_for(parsed)
        except (ValueError, jsonschema_rs.ValidationError) as exc:
            raise InputError(f"schema is not a valid JSON Schema: {str(exc).splitlines()[0]}") from None
        return AnswerSpec(answer, schema=schema)
    return AnswerSpec(answer)


class GrammarCache:
    """Compiles answer grammars with xgrammar for one tokenizer, keeping the `size` most recently used (xgrammar's own
    cache is off: it has no bound by default, and anyone can send a new schema). Safe from several threads."""

    def __init__(self, tokenizer: Any, vocab_size: int, size: int = 256) -> None:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self._compiled: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def matcher(self, spec: AnswerSpec) -> Any:
        """A fresh `xgrammar.GrammarMatcher` for `spec`, or None for TEXT; raises `InputError` for a schema
        xgrammar cannot compile."""
        import xgrammar as xgr

        compiled = self.compile(spec)
        return None if compiled is None else xgr.GrammarMatcher(compiled)

    def compile(self, spec: AnswerSpec) -> Any:
        """`spec`'s compiled grammar (from the cache when it was used lately), or None for TEXT; raises
        `InputError` for a schema xgrammar cannot compile."""
        source = spec.grammar_source()
        if source is None:
            return None
        with self._lock:
            compiled = self._compiled.get(source)
            if compiled is not None:
                self._compiled.move_to_end(source)
        if compiled is None:
            try:
                if source[0] == "ebnf":
                    compiled = self._compiler.compile_grammar(source[1])
                else:
                    compiled = self._compiler.compile_json_schema(source[1], any_whitespace=False)
            except Exception as exc:  # xgrammar raises RuntimeError/ValueError with the parser's message
                raise InputError(f"cannot build a grammar for this answer: {exc}") from None
            with self._lock:
                self._compiled[source] = compiled
                while len(self._compiled) > self._size:
                    self._compiled.popitem(last=False)
        return compiled
