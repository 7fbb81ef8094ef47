"""Types shared by the apps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

if TYPE_CHECKING:
    from webapp.system.models import User

# Who performs an action: a user (API, admin), or None for the platform itself (tasks, ingest).
Actor = AbstractBaseUser | AnonymousUser | None


def recorded_user(actor: Actor) -> User | None:
    """The user to record as author of a change (None for the platform or anonymous)."""
    from webapp.system.models import User

    return actor if isinstance(actor, User) else None
