"""Template tags of the console: the navigation, typed inputs, times and badges."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import template
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from webapp.console import navigation

register = template.Library()


@register.inclusion_tag("console/_nav.html", takes_context=True)
def console_nav(context: dict[str, Any]) -> dict[str, Any]:
    request = context["request"]
    match = getattr(request, "resolver_match", None)
    current = match.url_name if match is not None else ""
    return {"sections": navigation.build(request.user, current or "")}


@register.inclusion_tag("console/_input.html")
def typed_input(spec: dict[str, Any], name: str, value: str = "",
                optional: bool = False) -> dict[str, Any]:
    """An input for a thing-model field (`webapp.console.inputs.widget`); `optional` drops
    the field's own `required` (a desired state names only some properties)."""
    return {"spec": spec, "name": name, "value": value,
            "required": bool(spec.get("required")) and not optional}


@register.filter
def from_ms(value: Any) -> datetime | None:
    """Epoch milliseconds as an aware datetime."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError):
        return None


@register.filter
def iso(value: datetime | None) -> str:
    return value.isoformat() if isinstance(value, datetime) else ""


@register.simple_tag
def console_title() -> str:
    """The `console.title` parameter administrators set (ThingLinks by default)."""
    from webapp.system.cache import param

    return str(param("console.title", "ThingLinks") or "ThingLinks")


@register.simple_tag
def languages() -> list[tuple[str, str]]:
    return [(code, str(name)) for code, name in settings.LANGUAGES]


# Why a device went offline, as the edge reports it (docs/bus.md, `status` events).
CONNECTION_REASONS = {
    "disconnect": _("the device disconnected"),
    "error": _("connection lost"),
    "keepalive": _("keep-alive expired"),
    "timeout": _("timed out"),
    "idle": _("idle too long"),
    "takeover": _("replaced by a new connection"),
    "client_id": _("client id refused"),
    "budget": _("over its budget"),
    "refused": _("refused"),
    "revoked": _("credentials revoked"),
    "kicked": _("disconnected by an operator"),
    "deleted": _("device deleted"),
    "shutdown": _("edge node stopped"),
    "not_stored": _("a message could not be stored"),
}


@register.filter
def connection_reason(code: str) -> str:
    """A connection event's reason in words (the code itself when it is not a known one)."""
    return str(CONNECTION_REASONS.get(code, code)) if code else ""
