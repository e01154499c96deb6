"""The HA tier's own PostgreSQL: a throwaway cluster per test session that the gateways on h1/h2 reach over
the test network (10.77.0.1) and that the tests may restart or stop under load without disturbing the
shared test cluster (.ci/setup/postgres.sh) other tests use."""

from __future__ import annotations

import glob
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

BRIDGE_ADDRESS = "10.77.0.1"  # the test hosts' gateway address (.ci/setup/testhosts.sh)
PASSWORD = "gpuform-ha-password"


def _bin(name: str) -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not found:
        pytest.fail("PostgreSQL server binaries are missing: run .ci/setup/packages.sh")
    return f"{found[-1]}/{name}"


def _as_postgres(*argv: str, timeout: float = 120) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=timeout)


@dataclass
class HaPostgres:
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, address: str = BRIDGE_ADDRESS) -> str:
        """The URL as the gateways on h1/h2 (or, with 127.0.0.1, this machine) reach it."""
        return f"postgresql://gpuform:{PASSWORD}@{address}:{self.port}/gpuform"

    def init(self) -> None:
        self.root.mkdir(parents=True)
        (self.root / "run").mkdir()
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.root / "run", "postgres", "postgres")
        _as_postgres(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                     "--auth-host=scram-sha-256", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(f"listen_addresses = '127.0.0.1,{BRIDGE_ADDRESS}'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root / 'run'}'\nmax_connections = 200\nfsync = off\n"
                       "synchronous_commit = off\nfull_page_writes = off\n")
        with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as hba:
            hba.write("host all all 10.77.0.0/24 scram-sha-256\n")
        self.start()
        sql = f"CREATE ROLE gpuform LOGIN PASSWORD '{PASSWORD}'; CREATE DATABASE gpuform OWNER gpuform;"
        for statement in sql.split("; "):
            _as_postgres("psql", "-h", str(self.root / "run"), "-p", str(self.port), "-U", "postgres",
                         "-v", "ON_ERROR_STOP=1", "-qc", statement.rstrip(";"))

    def start(self) -> None:
        _as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w", "-t", "60",
                     "start")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", _bin("pg_ctl"), "-D", str(self.data), "-m", "immediate",
                        "stop"], capture_output=True, check=False, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def ha_postgres() -> Iterator[HaPostgres]:
    pg = HaPostgres(Path("/var/lib/gpuform-test") / f"ha-pg-{uuid.uuid4().hex[:8]}", free_port())
    pg.init()
    yield pg
    pg.remove()
