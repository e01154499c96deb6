"""The postgres gateway store on the tests' PostgreSQL (its contract is in test_gateway_store.py): versioned
migrations, sealed secrets, failures as StoreError without the password (and 503, never 500, at the
gateway), reconnection, several threads, and a schema that belongs to one deployment."""

from __future__ import annotations

import asyncio
import threading

import psycopg
import pytest

from gpuform.errors import StoreError
from gpuform.gateway import postgres
from gpuform.gateway.jobs import Job
from gpuform.gateway.postgres import PostgresStore, default_schema
from gpuform.gateway.runtime import open_store
from gpuform.gateway.store import StoredEndpoint
from tests.gateway_harness import Harness, endpoint_spec, gateway, runtime_config
from tests.pg import postgres_url

pytestmark = [pytest.mark.unit, pytest.mark.postgres]


def _job(job_id: str) -> Job:
    return Job(id=job_id, endpoint="ep", input={"n": job_id}, created_at=1.0, execution_timeout=60, ttl=600)


def _sql(query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


def test_a_schema_is_created_once_and_what_was_committed_is_there_when_reopened(schema: str) -> None:
    first = PostgresStore(postgres_url(), schema, "key")
    assert first.migrated_from == 0 and first.schema_version() == postgres.SCHEMA_VERSION
    first.jobs.insert(_job("a"))
    first.close()
    again = PostgresStore(postgres_url(), schema, "key")
    assert again.migrated_from == postgres.SCHEMA_VERSION, "nothing left to migrate"
    assert [j.id for j in again.jobs.open_jobs()] == ["a"]
    again.close()


def test_a_schema_from_a_newer_gpuform_is_refused_with_a_clear_message(schema: str) -> None:
    PostgresStore(postgres_url(), schema).close()
    _sql(f'INSERT INTO "{schema}".schema_migrations (version) VALUES ({postgres.SCHEMA_VERSION + 1})')
    with pytest.raises(StoreError, match="newer than this gpuform knows") as info:
        PostgresStore(postgres_url(), schema)
    assert "newer gpuform" in info.value.hint


def test_endpoint_secrets_are_sealed_in_the_table_and_open_only_with_the_gateway_key(schema: str) -> None:
    store = PostgresStore(postgres_url(), schema, "key-1")
    store.endpoints.put("ep", StoredEndpoint(endpoint_spec(), {"TOKEN": "hunter2"}, "r1"))
    ((sealed,),) = _sql(f'SELECT secret_env FROM "{schema}".endpoints')
    assert str(sealed).startswith("v1:") and "hunter2" not in str(sealed)
    store.close()
    other = PostgresStore(postgres_url(), schema, "key-2")
    with pytest.raises(StoreError, match="do not open with this gateway's key"):
        other.endpoints.all()
    other.close()


def test_an_unreachable_database_is_a_store_error_that_never_shows_the_password(schema: str) -> None:
    with pytest.raises(StoreError, match="cannot connect to the gateway database") as info:
        PostgresStore("postgresql://gpuform:s3cret-pw@127.0.0.1:1/gpuform", schema)
    assert "s3cret-pw" not in str(info.value) and "127.0.0.1:1/gpuform" in str(info.value)
    with pytest.raises(StoreError, match="not a PostgreSQL URL"):
        PostgresStore("postgresql://a:b@host:notaport/db?bogus_option=1", schema)


def test_a_lost_connection_fails_one_call_and_the_next_reconnects(schema: str) -> None:
    store = PostgresStore(postgres_url(), schema)
    store.jobs.insert(_job("a"))
    _sql(f"SELECT pg_terminate_backend({_pid(store)})")
    with pytest.raises(StoreError, match="the gateway database failed"):
        store.jobs.get("a")
    assert store.jobs.get("a") is not None
    store.close()


def _pid(store: PostgresStore) -> int:
    return int(store.db.run(lambda c: c.info.backend_pid))


def test_threads_share_one_store_safely(schema: str) -> None:
    store = PostgresStore(postgres_url(), schema)

    def insert(n: int) -> None:
        for i in range(25):
            store.jobs.insert(_job(f"{n}-{i}"))

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.jobs.open_jobs()) == 100
    store.close()


def test_the_runtime_opens_the_named_schema_and_refuses_another_deployments(schema: str) -> None:
    config = runtime_config(store={"type": "postgres", "url": "sensitive:hash", "schema_name": schema})
    with pytest.raises(StoreError, match="has no URL"):
        open_store(config)
    config = config.model_copy(update={"store_url": postgres_url()})
    store = open_store(config)
    store.set_meta("lineage", "another-lineage")
    store.close()
    with pytest.raises(StoreError, match="belongs to another gpuform deployment"):
        open_store(config)
    assert default_schema("my-gw") == "gpuform_gateway_my_gw" and len(default_schema("x" * 63)) == 63


def test_clients_get_503_with_retry_after_while_the_database_is_lost_never_500(schema: str) -> None:
    async def main() -> None:
        store = PostgresStore(postgres_url(), schema, "key")
        async with gateway(store=store) as h:
            job_id = await h.run({"x": 1})
            await _lose_connection(h, store)
            resp = await h.call("POST", "/v2/ep/run", json={"input": {"x": 2}})
            assert resp.status_code == 503 and resp.headers["Retry-After"]
            assert "nothing was accepted" in resp.json()["error"]
            assert (await h.status(job_id))["status"] == "IN_QUEUE"
            assert (await h.call("POST", "/v2/ep/run", json={"input": {"x": 3}})).status_code == 200

    asyncio.run(main())


async def _lose_connection(h: Harness, store: PostgresStore) -> None:
    await h.settle()
    _sql(f"SELECT pg_terminate_backend({_pid(store)})")


def test_after_a_failed_connect_calls_fail_at_once_for_a_moment(schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PostgresStore(postgres_url(), schema)
    store.db.url = "postgresql://gpuform:pw@127.0.0.1:1/gpuform"  # the database becomes unreachable
    store.db.run(lambda c: c.close())
    attempts: list[str] = []
    real = psycopg.connect

    def counting(*args: object, **kwargs: object) -> object:
        attempts.append("connect")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(psycopg, "connect", counting)
    for _ in range(3):
        with pytest.raises(StoreError, match="cannot connect"):
            store.jobs.get("a")
    assert attempts == ["connect"], "one attempt, then the remembered failure until the pause is over"
    monkeypatch.setattr(postgres, "RECONNECT_PAUSE", 0.0)
    store.db.url = postgres_url()
    assert store.jobs.get("a") is None and len(attempts) == 2
    store.close()
