"""What to say about a config key nobody knows: where it came from (the file, or an `INFERA_…` environment variable)
and which known key it was probably meant to be.

`NodeConfig` takes nested keys from `INFERA_<SECTION>__<KEY>` variables as well as from the file, so a misspelt
variable used to be reported like a misspelt key of the file. These helpers read the config classes' fields (never a
list kept by hand) and suggest the closest known name with `difflib`.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

#: The prefix and the nesting separator of the environment variables that override config keys.
ENV_PREFIX = "INFERA_"
ENV_NESTING = "__"
#: `INFERA_…` variables this project reads itself (not config overrides), never flagged as typos.
OWN_VARIABLES = frozenset(
    {"INFERA_PRIVATE_KEY", "INFERA_MQTT_PASSWORD", "INFERA_ATTESTATION_KEY_FILE", "INFERA_FAULT_POINT", "INFERA_DEBUG"}
)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The config class behind a field's annotation (`X`, `X | None`, `list[X]`), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def section_fields(root: type[BaseModel], path: Sequence[str | int]) -> dict[str, type[BaseModel] | None]:
    """The keys of the table at `path` under `root` (list indexes skipped), each with its own config class when it is
    a table; empty when `path` is no table."""
    model: type[BaseModel] | None = root
    for part in path:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        model = _model_of(info.annotation) if info is not None else None
    if model is None:
        return {}
    return {name: _model_of(info.annotation) for name, info in model.model_fields.items()}


def env_name(path: Sequence[str | int]) -> str:
    """The environment variable that sets the key at `path` (`("chain", "rpc_url")` → `INFERA_CHAIN__RPC_URL`)."""
    return ENV_PREFIX + ENV_NESTING.join(str(p).upper() for p in path)


def set_env_var(path: Sequence[str | int]) -> str | None:
    """The environment variable, as it is spelt in the environment, that set the key at `path`; None when none did
    (pydantic-settings matches names without regard to case)."""
    wanted = env_name(path).upper()
    return next((name for name in os.environ if name.upper() == wanted), None)


#: A value shaped like a private key: 64 hex digits, with or without 0x (never echoed in an error).
_KEY_SHAPED = re.compile(r"(?<![0-9A-Za-z])(0[xX])?[0-9a-fA-F]{64}(?![0-9A-Za-z])")
REDACTED = "<redacted: a private key?>"


def looks_like_key(value: str | None) -> bool:
    """Whether `value` (stripped) is shaped like a private key: 64 hex digits, 0x optional."""
    return value is not None and _KEY_SHAPED.fullmatch(value.strip()) is not None


def redact(text: str) -> str:
    """`text` with every run of 64 hex digits (0x optional: what a private key looks like) replaced by
    `<redacted: a private key?>`, so an error line can never carry a secret (a transaction or block hash is
    redacted too: an error line about the config has none to show)."""
    return _KEY_SHAPED.sub(REDACTED, text)


def key_in_env_key(var: str) -> str:
    """The line for an environment variable that holds a private key where the config wants the *name* of one."""
    return (
        f"environment variable {var} holds a private key (not shown), but no config key takes a key itself: put it"
        " in the variable that wallet.private_key_env names (by default INFERA_PRIVATE_KEY: INFERA_PRIVATE_KEY=0x…,"
        f' private_key_env = "INFERA_PRIVATE_KEY"), and unset {var}'
    )


def closest(name: str, known: Sequence[str]) -> str | None:
    """The known name `name` was most probably meant to be, or None when none is close."""
    found = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_key(root: type[BaseModel], loc: Sequence[str | int]) -> str:
    """The line for an unknown key at `loc` (as pydantic reports it): blamed on its environment variable when one set
    it, else on the file, with the closest known key of its table (or the table where that key lives) to try."""
    parent, name = list(loc[:-1]), str(loc[-1])
    dotted = ".".join(str(p) for p in loc)
    known = section_fields(root, parent)
    guess = closest(name, list(known))
    var = set_env_var(loc)
    if var is not None and looks_like_key(os.environ.get(var)):  # never steer to a key that would print a secret
        return key_in_env_key(var)
    if var is not None:
        hint = f"; did you mean {env_name([*parent, guess])}?" if guess else ""
        return f"environment variable {var}: {dotted} is not a config key (unset it, or check its spelling){hint}"
    if guess is not None:
        hint = f"; did you mean {'.'.join(str(p) for p in [*parent, guess])}?"
    else:
        elsewhere = [s for s, table in section_fields(root, []).items() if table and name in table.model_fields]
        hint = f"; it is a key of [{elsewhere[0]}]" if elsewhere else ""
    return f"{dotted}: unknown key (check its spelling and section){hint}"


def _single_underscore(root: type[BaseModel], var: str) -> str | None:
    """The variable `var` (an `INFERA_…` name without `__`) was meant to be, when it is shaped like a config key
    written with one underscore: `INFERA_CHAIN_RPC_URL` or `INFERA_RPC_URL` → `INFERA_CHAIN__RPC_URL`; else None."""
    rest = var[len(ENV_PREFIX) :].lower()
    tables = {s: t for s, t in section_fields(root, []).items() if t is not None}
    for section, table in tables.items():
        if rest.startswith(section + "_") and rest[len(section) + 1 :] in table.model_fields:
            return env_name([section, rest[len(section) + 1 :]])
    owners = [s for s, table in tables.items() if rest in table.model_fields]
    return env_name([owners[0], rest]) if len(owners) == 1 else None


def unknown_env_sections(root: type[BaseModel], *, named: Sequence[str] = ()) -> list[str]:
    """A line for each `INFERA_<SECTION>__…` environment variable whose section does not exist, and for each
    `INFERA_<SECTION>_<KEY>` or `INFERA_<KEY>` one (one underscore: not an override) shaped like a config key
    (pydantic-settings ignores both silently, so the override the operator meant never happens). Variables the node
    reads itself (`INFERA_PRIVATE_KEY`, `INFERA_DEBUG`, `INFERA_FAULT_POINT`, …) are not config-key shaped and are
    left alone, as is every name in `named` (the variables the config's `*_env` keys name)."""
    sections = list(section_fields(root, []))
    own = {n.upper() for n in named} | OWN_VARIABLES
    lines = []
    for var in sorted(os.environ):
        if not var.upper().startswith(ENV_PREFIX) or var.upper() in own:
            continue
        if looks_like_key(os.environ[var]) and (
            ENV_NESTING in var[len(ENV_PREFIX) :] or _single_underscore(root, var) is not None
        ):  # a key where no override takes one: say where it goes, never suggest a name that would echo it
            if var[len(ENV_PREFIX) :].partition(ENV_NESTING)[0].lower() not in sections:
                lines.append(key_in_env_key(var))
            continue
        if ENV_NESTING not in var[len(ENV_PREFIX) :]:
            meant = _single_underscore(root, var)
            if meant is not None:
                lines.append(
                    f"environment variable {var} is not read (a section and its key are joined by two underscores);"
                    f" did you mean {meant}?"
                )
            continue
        section, _, rest = var[len(ENV_PREFIX) :].partition(ENV_NESTING)
        if section.lower() in sections:
            continue
        guess = closest(section, sections)
        hint = f"; did you mean {ENV_PREFIX}{guess.upper()}{ENV_NESTING}{rest.upper()}?" if guess else ""
        lines.append(
            f"environment variable {var}: there is no config section [{section.lower()}]"
            f" (sections: {', '.join(sections)}){hint}"
        )
    return lines
