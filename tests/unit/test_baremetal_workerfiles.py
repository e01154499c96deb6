"""A bare-metal worker's files on its hosts: where they are, what their requirements.txt files mean together, and
what refresh reports (pure parts of gpuform/providers/baremetal/workerfiles.py; the contract test runs them on h1/h2)."""

from __future__ import annotations

import pytest

from gpuform.errors import ProviderError
from gpuform.providers.baremetal.workerfiles import (
    HostFiles,
    Paths,
    environment,
    host_requirements,
    observe,
    paths,
)
from gpuform.providers.common.venvs import worker_requirements

pytestmark = pytest.mark.unit

REQS = "/srv/app/requirements.txt"
WHERE = Paths("/srv/app/handler.py", REQS)


def test_the_handler_and_its_requirements_are_found_as_the_worker_finds_them() -> None:
    assert paths(["python", "handler.py"], "/srv/app", "/data") == WHERE
    assert paths(["python", "-u", "src/handler.py", "--x"], None, "/data") == Paths(
        "/data/src/handler.py", "/data/src/requirements.txt")
    assert paths(["python", "/opt/h.py"], "/srv/app", "/data") == Paths("/opt/h.py", "/opt/requirements.txt")
    assert paths(["python", "-m", "app"], "/srv/app", "/data") == Paths(None, None)
    assert paths(None, None, "/data") == Paths(None, None)


def test_requirements_are_the_same_file_on_every_host() -> None:
    text = "# pinned\nsix==1.17.0  # tiny\n\nrunpod\n"
    assert host_requirements("app", REQS, {"h1": text, "h2": text}) == ["six==1.17.0", "runpod"]
    assert host_requirements("app", REQS, {"h1": text, "h2": "six==1.17.0\nrunpod # same lines\n"}) == [
        "six==1.17.0", "runpod"], "comments and blank lines do not make two files differ"
    assert host_requirements("app", REQS, {"h1": None, "h2": "# nothing\n"}) == []
    assert host_requirements("app", None, {}) == []


def test_hosts_that_disagree_are_named() -> None:
    with pytest.raises(ProviderError) as raised:
        host_requirements("app", REQS, {"h1": "six==1.16.0\n", "h2": "six==1.17.0\n", "h3": None})
    assert raised.value.message == (f"endpoint app: {REQS} lists different requirements on different hosts "
                                    "(h1: six==1.16.0; h2: six==1.17.0; h3: none)")
    assert "the same on every host" in raised.value.hint and raised.value.address == "endpoint.app"


def test_a_pip_option_is_refused_with_host_file_and_line() -> None:
    with pytest.raises(ProviderError) as raised:
        host_requirements("app", REQS, {"h1": "six\n", "h2": "six\n--index-url https://x/simple\n"})
    assert raised.value.message.startswith(f"endpoint app: {REQS}:2 on h2: pip options are not supported")
    assert "--index-url https://x/simple" in raised.value.message and "PIP_INDEX_URL" in raised.value.hint


def _host(ready: bool = True, built: list[str] | None = None, handler: bool = True, text: str | None = None,
          python: bool = True) -> HostFiles:
    return HostFiles(ready, built, handler, text, python)


def test_refresh_repairs_a_missing_or_stale_environment() -> None:
    built = worker_requirements(["six==1.17.0"])
    same = observe("app", [], WHERE, None, {"h1": _host(built=built, text="six==1.17.0\n"),
                                            "h2": _host(built=built, text="six==1.17.0\n")})
    assert (same.repair, same.notes, same.attributes) == ([], [], {"hosts_ready": ["h1", "h2"]})
    stale = observe("app", [], WHERE, None, {"h1": _host(built=built, text="six==1.16.0\n"),
                                             "h2": _host(False, text="six==1.16.0\n")})
    assert stale.repair == ["worker environment missing on h2",
                            "worker environment out of date on h1 (its requirements changed)"]
    assert stale.attributes == {"hosts_ready": ["h1"]}
    configured = observe("app", ["six==1.17.0"], WHERE, None, {"h1": _host(built=built)})
    assert configured.repair == [], "worker.requirements count as well as the file"


def test_an_environment_an_earlier_gpuform_built_is_stale_only_when_requirements_txt_adds_lines() -> None:
    assert observe("app", ["six"], WHERE, None, {"h1": _host(built=None)}).repair == []
    assert observe("app", [], WHERE, None, {"h1": _host(built=None, text="six\n")}).repair == [
        "worker environment out of date on h1 (its requirements changed)"]


def test_what_apply_would_refuse_is_a_note() -> None:
    found = {"h1": _host(built=["x"], text="six==1.16.0\n"), "h2": _host(handler=False, python=False, text="six\n")}
    seen = observe("app", [], WHERE, "/opt/venv", found)
    assert seen.notes == [
        "worker.python /opt/venv does not exist on h2: create it there (apply fails until it exists), or leave "
        "`python` out",
        "the handler /srv/app/handler.py does not exist on h2: put it there (gpuform does not copy it; apply fails "
        "until it exists), or fix worker.command or worker.workdir",
        f"{REQS} lists different requirements on different hosts (h1: six==1.16.0; h2: six): apply fails until "
        "it is fixed"]
    assert seen.repair == [], "with requirements that cannot be merged, nothing says what the environment should hold"


def test_the_environment_rolls_workers_when_what_it_holds_changes() -> None:
    assert environment(["six==1.17.0"]) == environment(["six==1.17.0", "aiohttp>=3.9"])
    assert environment(["six==1.17.0"]) != environment(["six==1.16.0"])
    assert environment(["six"]).startswith("reqs-")
