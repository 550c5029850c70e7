"""The store's SQL on PostgreSQL (node/jobs/db.py) and the store's config keys: pure logic, plus one round trip of
every value kind through both backends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.config import parse_config
from node.errors import ConfigError
from node.jobs.db import _checked_args, connect, pg_sql, redact_url

ADDRESS = "0x5fbdb2315678afecb367f032d93f642f64180aa3"


def test_parameters_percent_signs_and_64_bit_types_are_mapped_for_postgresql() -> None:
    assert pg_sql("SELECT 1 FROM t WHERE a=? AND b LIKE 'x%'") == "SELECT 1 FROM t WHERE a=%s AND b LIKE 'x%%'"
    assert pg_sql("SELECT CAST(json_extract(r, '$.deadline') AS INTEGER) < ?").endswith("AS NUMERIC) < %s")
    ddl = pg_sql("CREATE TABLE t (a INTEGER NOT NULL, b REAL, c BLOB, integer_like TEXT)")
    assert ddl == "CREATE TABLE t (a BIGINT NOT NULL, b DOUBLE PRECISION, c BYTEA, integer_like TEXT)"
    assert pg_sql("UPDATE t SET a = ? WHERE kind = 'INTEGER'") == "UPDATE t SET a = %s WHERE kind = 'INTEGER'"


@given(st.integers())
def test_an_integer_outside_int64_is_refused_before_the_database_as_sqlite_refuses_it(value: int) -> None:
    if -(2**63) <= value < 2**63:
        assert _checked_args([value, True, "x"]) == (value, 1, "x")  # a bool is stored as SQLite stores it
    else:
        with pytest.raises(OverflowError):
            _checked_args([value])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://infera:s3cret@db:5432/infera", "postgresql://infera:***@db:5432/infera"),
        ("postgresql://infera@db/infera", "postgresql://infera@db/infera"),
        ("/var/lib/infera/infera.db", "/var/lib/infera/infera.db"),
    ],
)
def test_a_database_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def chain() -> dict[str, object]:
    return {"rpc_url": "http://127.0.0.1:8545", "coordinator_address": ADDRESS}


MODELS = [{"name": "echo", "url": "http://127.0.0.1:3000"}]


def test_a_password_in_the_store_url_is_refused_with_where_it_goes_instead() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"chain": chain(), "models": MODELS, "store": {"url": "postgresql://infera:hunter2@db/infera"}})
    assert "PGPASSWORD" in str(caught.value)
    assert "store.url" in str(caught.value)


def test_the_store_location_is_the_url_when_given_else_the_file() -> None:
    cfg = parse_config(
        {"chain": chain(), "models": MODELS, "store": {"url": "postgresql://infera@db/infera", "lease_ttl_s": 5}}
    )
    assert (cfg.store.location, cfg.store.lease_ttl_s) == ("postgresql://infera@db/infera", 5)
    assert parse_config({"chain": chain(), "models": MODELS, "store": {"path": "x.db"}}).store.location == "x.db"
    with pytest.raises(ConfigError, match="lease_ttl_s"):
        parse_config(
            {"chain": chain(), "models": MODELS, "store": {"url": "postgresql://infera@db/infera", "lease_ttl_s": 1}}
        )
    with pytest.raises(ConfigError, match=r"store\.url"):
        parse_config({"chain": chain(), "models": MODELS, "store": {"url": "mysql://db/infera"}})


@pytest.mark.parametrize("value", [0, -1, 2**63 - 1, -(2**63), 1.5, "text ' with; quotes", b"\x00\xffbytes", None])
def test_every_kind_of_value_comes_back_as_it_went_in(store_at: str, value: object) -> None:
    db = connect(store_at)
    try:
        db.script("CREATE TABLE kinds (i INTEGER, r REAL, t TEXT, b BLOB)")
        column = {int: "i", float: "r", str: "t", bytes: "b", type(None): "t"}[type(value)]
        db.execute(f"INSERT INTO kinds ({column}) VALUES (?)", (value,))
        (got,) = db.execute(f"SELECT {column} FROM kinds").fetchone()
        assert got == value
        assert type(got) is type(value)
    finally:
        db.close()
