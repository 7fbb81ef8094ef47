"""Who made a change, as the records keep it."""

from __future__ import annotations

from webapp.core.types import Actor
from webapp.system.models import User


def recorded_user(actor: Actor) -> User | None:
    """The user to record as author of a change (None for the platform or anonymous)."""
    return actor if isinstance(actor, User) else None
