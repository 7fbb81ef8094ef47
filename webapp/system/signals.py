"""Login events: the login log, the lockout counter and the online-users session."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

from webapp.core.context import client_address
from webapp.system import lockout, sessions
from webapp.system.choices import LoginChannel, LoginResult

SESSION_ID = "tl_sid"


def channel_of(request: Any) -> str:
    path = getattr(request, "path", "") or ""
    return LoginChannel.API if path.startswith("/api/") else LoginChannel.ADMIN


def log_login(username: str, result: str, request: Any, user: Any = None,
              channel: str | None = None) -> None:
    from webapp.system.models import LoginLog

    meta = getattr(request, "META", {}) if request is not None else {}
    LoginLog.objects.create(
        username=(username or "")[:150], user=user, result=result,
        channel=channel or channel_of(request),
        address=client_address(request) if request is not None else None,
        user_agent=meta.get("HTTP_USER_AGENT", "")[:300])


def on_login_failed(sender: Any, credentials: dict[str, Any], request: Any = None,
                    **kwargs: Any) -> None:
    from webapp.system.models import User

    username = str(credentials.get("username") or "")
    if not username:
        return
    address = client_address(request) if request is not None else None
    if lockout.is_locked(username, address):
        result = LoginResult.LOCKED
    else:
        lockout.record_failure(username, address)
        inactive = User.objects.filter(username=username, is_active=False).exists()
        result = LoginResult.INACTIVE if inactive else LoginResult.BAD_CREDENTIALS
    log_login(username, result, request)


def on_logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """A session login (the admin): log it, clear the failures, open an online session."""
    if request is None:
        return
    lockout.reset(user.get_username(), client_address(request))
    log_login(user.get_username(), LoginResult.SUCCESS, request, user=user,
              channel=LoginChannel.ADMIN)
    session = getattr(request, "session", None)
    if session is not None:
        if session.session_key is None:
            session.save()
        online = sessions.open_session(user, LoginChannel.ADMIN, request,
                                       session_key=session.session_key or "")
        session[SESSION_ID] = str(online.pk)


def on_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    from webapp.system.models import LoginSession

    session = getattr(request, "session", None)
    sid = session.get(SESSION_ID) if session is not None else None
    if sid:
        online = LoginSession.objects.filter(pk=sid).first()
        if online is not None:
            online.session_key = ""
            sessions.revoke(online)


def connect() -> None:
    user_login_failed.connect(on_login_failed, dispatch_uid="tl_login_failed")
    user_logged_in.connect(on_logged_in, dispatch_uid="tl_logged_in")
    user_logged_out.connect(on_logged_out, dispatch_uid="tl_logged_out")
