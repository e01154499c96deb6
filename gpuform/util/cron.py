"""Cron windows for warm-worker policies (5-field cron, evaluated in a time zone)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError


def check_cron(expr: str) -> None:
    """Raise ``ValueError`` with a readable message when ``expr`` is not a 5-field cron expression."""
    if len(expr.split()) != 5:
        raise ValueError(f'"{expr}" must have 5 fields: minute hour day-of-month month day-of-week')
    try:
        CronSim(expr, datetime(2024, 1, 1))
    except CronSimError as exc:
        raise ValueError(f'"{expr}" is not a valid cron expression: {exc}') from exc


def window_active(expr: str, duration_s: float, now: datetime, tz: str = "UTC") -> bool:
    """Whether ``now`` (aware) lies inside a window that starts at a cron match and lasts ``duration_s``.

    The latest match at or before ``now`` is found by walking forward from ``now - duration``; windows
    longer than a week are capped at a week.
    """
    zone = ZoneInfo(tz)
    local_now = now.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    span = timedelta(seconds=min(duration_s, 7 * 86400))
    start = local_now - span - timedelta(minutes=1)
    for match in CronSim(expr, start):
        if match > local_now:
            return False
        if local_now < match + span:
            return True
    return False
