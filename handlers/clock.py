"""Time tools: what time it is in a time zone, and one time seen from another zone."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Annotated

import msgspec

from orchestrator.tools import tool

__all__ = ["LocalTime", "convert_time", "current_time", "time_in"]


class LocalTime(msgspec.Struct, frozen=True):
    """A moment as seen in one time zone."""

    timezone: str
    #: ISO 8601 with the UTC offset, e.g. ``2024-05-01T09:30:00+02:00``.
    local_time: str
    #: ``+02:00``.
    utc_offset: str
    weekday: str
    #: Whether daylight saving time is in effect there.
    is_dst: bool


def _zone(name: str) -> dt.tzinfo:
    if name.strip().upper() in ("UTC", "Z", "GMT"):
        return dt.UTC  # works without a time zone database too
    try:
        return zoneinfo.ZoneInfo(name.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Paris', "
            "'America/New_York' or 'Asia/Tokyo'"
        ) from None


def time_in(timezone: str, moment: dt.datetime) -> LocalTime:
    """``moment`` (timezone-aware) as seen in ``timezone``."""
    local = moment.astimezone(_zone(timezone))
    offset = local.strftime("%z")
    return LocalTime(
        timezone=timezone.strip(),
        local_time=local.isoformat(timespec="seconds"),
        utc_offset=f"{offset[:3]}:{offset[3:]}" if offset else "+00:00",
        weekday=local.strftime("%A"),
        is_dst=bool(local.dst()),
    )


@tool
def current_time(timezone: str = "UTC") -> LocalTime:
    """Get the current date and time in a time zone.

    Use this whenever the answer depends on what time or day it is now, anywhere; never guess
    the current time. The result gives the local time with its UTC offset, the weekday and
    whether daylight saving time is in effect.

    Args:
        timezone: IANA time zone name, e.g. "Europe/Paris", "America/New_York",
            "Asia/Kolkata", or "UTC". Map a city to its zone yourself (Lyon → "Europe/Paris");
            abbreviations such as "PST" are not accepted.
    """
    return time_in(timezone, dt.datetime.now(dt.UTC))


@tool
def convert_time(
    when: Annotated[dt.datetime, msgspec.Meta(tz=True)], to_timezone: str
) -> LocalTime:
    """Convert a date and time to another time zone.

    Use this for questions like "when is 9:00 in Paris in Tokyo?": first write the known time
    with its UTC offset, then convert it.

    Args:
        when: The moment to convert, as ISO 8601 with a UTC offset, e.g.
            "2024-05-01T09:00:00+02:00" or "2024-05-01T07:00:00Z".
        to_timezone: IANA time zone name to express it in, e.g. "Asia/Tokyo" or "UTC".
    """
    return time_in(to_timezone, when)
