"""The control plane's admin client reaches a gateway with replicas through any live one: a refused
connection moves the call to the next replica; an answer (even an error) does not."""

from __future__ import annotations

import httpx
import pytest

from gpuform.errors import GatewayError
from gpuform.gateway.client import AdminClient

pytestmark = pytest.mark.unit


def _transport(down: set[str], seen: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.host in down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/admin/endpoints/gone":
            return httpx.Response(404, json={"error": "no endpoint gone"})
        return httpx.Response(200, json={"host": request.url.host, "auth": request.headers.get("authorization")})
    return httpx.MockTransport(handle)


def test_a_refused_connection_moves_the_call_to_the_next_replica_with_the_same_key() -> None:
    seen: list[str] = []
    client = AdminClient("http://r0:8080", "k", transport=_transport({"r0"}, seen),
                         fallbacks=("http://r0:8080", "http://r1:8081/"))
    assert client.get("/admin/info") == {"host": "r1", "auth": "Bearer k"}
    assert seen == ["r0", "r1"] and client.fallbacks == ("http://r1:8081",)


def test_an_answer_is_final_and_every_replica_down_names_them_all() -> None:
    seen: list[str] = []
    client = AdminClient("http://r0:8080", "k", transport=_transport(set(), seen), fallbacks=("http://r1:8081",))
    with pytest.raises(GatewayError, match="answered 404"):
        client.get("/admin/endpoints/gone")
    assert seen == ["r0"], "a gateway that answered is not asked again elsewhere"
    down = AdminClient("http://r0:8080", "k", transport=_transport({"r0", "r1"}, []), fallbacks=("http://r1:8081",))
    with pytest.raises(GatewayError, match=r"cannot reach the gateway at http://r0:8080 \(and its other replicas "
                                           r"http://r1:8081\)"):
        down.get("/admin/info")
