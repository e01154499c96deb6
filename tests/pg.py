"""The tests' PostgreSQL cluster (.ci/setup/postgres.sh): its URL, and a schema of its own for each test."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

INFO = Path("/var/lib/gpuform-test/postgres.json")


def postgres_url() -> str:
    if not INFO.exists():
        if os.environ.get("CI"):
            raise AssertionError("the test PostgreSQL is missing: .ci/setup/postgres.sh must run before the tests")
        pytest.skip("test PostgreSQL not running (run .ci/setup/postgres.sh)")
    url: str = json.loads(INFO.read_text())["url"]
    return url


def fresh_schema() -> str:
    return "t_" + uuid.uuid4().hex[:12]


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
