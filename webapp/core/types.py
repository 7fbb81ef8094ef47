"""Types shared by the apps."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

# Who performs an action: a user (API, admin), or None for the platform itself (tasks, ingest).
# (`webapp.system.actors.recorded_user` gives the user to record as a change's author.)
Actor = AbstractBaseUser | AnonymousUser | None
