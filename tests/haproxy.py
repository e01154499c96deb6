"""HAProxy in the tests: the example's configuration and what its status page says of the replicas."""

from __future__ import annotations

import httpx

from tests.conftest import REPO

HAPROXY_CFG = REPO / "examples" / "ha" / "haproxy.cfg"


def states(stats_url: str) -> dict[str, str]:
    """Each replica's state on HAProxy's CSV status page (UP, NOLB, DOWN, "UP 1/2" between two, ...)."""
    rows = [line.split(",") for line in httpx.get(stats_url, trust_env=False).text.splitlines()]
    return {r[1]: r[17] for r in rows if len(r) > 17 and r[0] == "replicas" and r[1] != "BACKEND"}


def up(stats_url: str) -> set[str]:
    """The replicas HAProxy's health checks hold UP."""
    return {name for name, state in states(stats_url).items() if state == "UP"}
