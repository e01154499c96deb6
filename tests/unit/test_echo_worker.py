"""The echo worker's test hooks: the start-up delay read from its environment."""

from __future__ import annotations

import pytest

from gpuform.workers.echo.handler import STARTUP_DELAY_ENV, handler, startup_delay

pytestmark = pytest.mark.unit


def test_the_startup_delay_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STARTUP_DELAY_ENV, raising=False)
    assert startup_delay() == 0.0
    monkeypatch.setenv(STARTUP_DELAY_ENV, "2.5")
    assert startup_delay() == 2.5


@pytest.mark.parametrize("bad", ["soon", "-1", "inf", "nan"])
def test_a_startup_delay_that_is_not_seconds_stops_the_worker_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(STARTUP_DELAY_ENV, bad)
    with pytest.raises(SystemExit, match=STARTUP_DELAY_ENV):
        startup_delay()


def test_sleep_in_the_input_is_the_service_time() -> None:
    assert handler({"id": "j", "input": {"sleep": 0.01, "n": 1}}) == {"echo": {"sleep": 0.01, "n": 1}}
