"""Online users: one `LoginSession` per login; revoking it logs the user out everywhere it
was used (its JWTs are refused at once, its Django session is deleted)."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.utils import timezone

from webapp.core.context import client_address
from webapp.system.choices import LoginChannel
from webapp.system.models import LoginSession

# How long "this session is active" is believed without asking the database. Revocation
# overwrites the cached flag, so it takes effect at once; only `last_seen` lags this much.
CHECK_EVERY = 60


def _cache_key(sid: Any) -> str:
    # The id of the user the login belongs to, or 0 once it has ended.
    return f"login:{sid}"


def _lifetime(channel: str) -> timedelta:
    if channel == LoginChannel.API:
        jwt: Any = settings.SIMPLE_JWT
        return jwt["REFRESH_TOKEN_LIFETIME"]
    return timedelta(seconds=settings.SESSION_COOKIE_AGE)


def open_session(user: Any, channel: str, request: Any = None,
                 session_key: str = "") -> LoginSession:
    meta = getattr(request, "META", {}) if request is not None else {}
    session = LoginSession.objects.create(
        user=user, channel=channel, session_key=session_key or "",
        address=client_address(request) if request is not None else None,
        user_agent=meta.get("HTTP_USER_AGENT", "")[:300],
        expires=timezone.now() + _lifetime(channel))
    cache.set(_cache_key(session.pk), user.pk, CHECK_EVERY)
    return session


def owner(sid: Any) -> Any:
    """The id of the user whose login `sid` is, while it is valid (not revoked, not
    expired); None otherwise. Touches `last_seen`."""
    cached = cache.get(_cache_key(sid))
    if cached is not None:
        return cached or None
    now = timezone.now()
    try:
        active = LoginSession.objects.filter(pk=sid, revoked__isnull=True, expires__gt=now)
        user_id = active.values_list("user_id", flat=True).first()
        if user_id is not None:
            active.update(last_seen=now)
    except (ValueError, TypeError, ValidationError):
        user_id = None
    cache.set(_cache_key(sid), user_id or 0,
              CHECK_EVERY if user_id is not None else _remember_revoked())
    return user_id


def is_active(sid: Any, user_id: Any = None) -> bool:
    """Is the login `sid` still valid, and (given `user_id`) that user's? A token names both
    its user and its login: each must vouch for the other."""
    found = owner(sid)
    return found is not None and (user_id is None or str(found) == str(user_id))


def _remember_revoked() -> int:
    """A revoked session's tokens die with the refresh lifetime: remember it that long."""
    return int(_lifetime(LoginChannel.API).total_seconds()) + 60


def revoke(session: LoginSession) -> None:
    """End a login now: its tokens are refused and its admin session is deleted."""
    if session.revoked is None:
        session.revoked = timezone.now()
        session.save(update_fields=["revoked"])
    cache.set(_cache_key(session.pk), 0, _remember_revoked())
    if session.session_key:
        engine = import_module(settings.SESSION_ENGINE)
        engine.SessionStore(session_key=session.session_key).delete()


def extend(session_id: Any) -> None:
    """A refreshed JWT pair keeps its session alive for another refresh lifetime."""
    LoginSession.objects.filter(pk=session_id, revoked__isnull=True).update(
        expires=timezone.now() + _lifetime(LoginChannel.API), last_seen=timezone.now())


def online() -> Any:
    return LoginSession.objects.filter(revoked__isnull=True, expires__gt=timezone.now())
