"""How a config that does not validate is reported: one line per bad key, blamed on the `INFERA_…` environment
variable that set it when one did (never on the file), with the hints of `config_hints`.

Kept apart from `node.config` (which imports it) so that module stays about the config's shape.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from node import config_hints
from node.errors import ConfigError


class KeyProblems(ConfigError):
    """Raised by a validator that found several bad keys at once: `problems` holds one (key, reason) per bad key,
    the key relative to where the validator runs (`format_errors` writes each as its own line)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in problems))
        self.problems = problems


#: The lists of tables: pydantic-settings cannot override one element of them, only the whole list (as JSON).
_TABLE_LISTS = {"models": "[[models]]", "api.tokens": "[[api.tokens]]"}


def _env_vars(prefix: str) -> list[str]:
    """The set environment variables whose name starts with `prefix` (case-insensitive, as pydantic-settings reads)."""
    return sorted(k for k in os.environ if k.upper().startswith(prefix.upper()))


def format_errors(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per problem of validating the config class `root`: `dotted.key: reason`, or `environment variable
    NAME: dotted.key: reason` when an `INFERA_…` variable set that value (or the table or list it is in)."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        problems = err.get("ctx", {}).get("error")
        if isinstance(problems, KeyProblems):  # several bad keys found by one validator: a line each
            lines += [f"{key}.{sub}: {why}" if err["loc"] else f"{sub}: {why}" for sub, why in problems.problems]
            continue
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            line = config_hints.unknown_key(root, err["loc"])
            setter = _setting_var(err["loc"])  # a key inside an INFERA_MODELS-like JSON value: that variable's
            if setter and not line.startswith("environment variable "):
                line = f"environment variable {setter}: {line}"
            lines.append(line)
            continue
        if key in _TABLE_LISTS and err["type"] == "list_type":
            var = "INFERA_" + key.upper().replace(".", "__")
            per_item = _env_vars(var + "__")
            if per_item:
                msg = (
                    f"the environment variable(s) {', '.join(per_item)} try to override one {_TABLE_LISTS[key]} table,"
                    f" which cannot be done: {_TABLE_LISTS[key]} tables can only be overridden as a whole, as JSON"
                    f" ({var}='[{{...}}, ...]'); unset {', '.join(per_item)}"
                )
            elif isinstance(err.get("input"), dict):  # `[models]` where `[[models]]` was meant
                msg = f"use {_TABLE_LISTS[key]} (an array of tables: one {_TABLE_LISTS[key]} header per entry)"
        setter = _setting_var(err["loc"])
        lines.append(f"environment variable {setter}: {key}: {msg}" if setter else f"{key}: {msg}")
    return lines


def _setting_var(loc: Sequence[str | int]) -> str | None:
    """The environment variable that set the value at `loc` or a table or list above it (`INFERA_MODELS` for
    `models.0.url`), as spelt in the environment; None when the value came from the file."""
    for end in range(len(loc), 0, -1):
        if any(isinstance(p, int) for p in loc[:end]):
            continue  # one element of a list cannot be set on its own (the whole list can)
        var = config_hints.set_env_var(loc[:end])
        if var is not None:
            return var
    return None


def settings_error(exc: SettingsError) -> str:
    """The line for an `INFERA_…` variable whose value is not the JSON its field needs, naming the variable(s)."""
    field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else "?"
    candidates = _env_vars(f"INFERA_{field}")
    bad = []
    for name in candidates:
        value = os.environ[name].strip()
        if value[:1] in "[{":
            try:
                json.loads(value)
            except ValueError:
                bad.append(name)
    named = ", ".join(bad or candidates) or f"INFERA_{field.upper()}…"
    return (
        f"environment variable {named}: {field}: malformed JSON ({exc.__cause__ or exc});"
        " lists and tables are given as JSON"
    )


def named_variables(data: Any) -> list[str]:
    """The environment variables the config's `*_env` keys name (anywhere in `data`): the node reads them itself."""
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if str(key).endswith("_env") and isinstance(value, str):
                found.append(value)
            elif str(key).endswith("_envs") and isinstance(value, list):
                found += [v for v in value if isinstance(v, str)]
            else:
                found += named_variables(value)
    elif isinstance(data, list):
        for item in data:
            found += named_variables(item)
    return found
