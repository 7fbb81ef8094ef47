"""Who a new channel or sink belongs to."""

from __future__ import annotations

from typing import Any

from webapp.core.types import Actor
from webapp.rules.models import NotificationChannel, Sink
from webapp.system.actors import recorded_user


def set_owner(record: NotificationChannel | Sink, acting_user: Actor,
               data: dict[str, Any]) -> None:
    """A new channel or sink is made by the acting user, in their department unless the
    data names one (the API and the admin check it is within the user's scope)."""
    user = recorded_user(acting_user)
    record.created_by = user
    if "department" not in data and user is not None:
        record.department_id = user.department_id
