"""Time zones users and requests name: IANA names only, checked against the system's zone data."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _


def zone_named(name: str | None) -> ZoneInfo | None:
    """The zone called `name`, or None when it names none (a path, a typo, empty)."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def validate_time_zone(value: str) -> None:
    if value and zone_named(value) is None:
        raise ValidationError(_("Unknown time zone %(name)s: use an IANA name like "
                                "Asia/Shanghai."), code="invalid_tz", params={"name": value})


def user_zone_name(user: Any) -> str:
    """The zone a user sees times in: their own, else the platform's TIME_ZONE."""
    name = getattr(user, "time_zone", "") or ""
    return name if zone_named(name) else settings.TIME_ZONE


def zone_choices() -> list[str]:
    """Every IANA zone name, sorted (for pickers)."""
    return sorted(name for name in available_timezones() if "/" in name or name == "UTC")
