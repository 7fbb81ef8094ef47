"""API authentication: JWTs bound to a login session, and per-user API keys.

Both activate the user's language for the request (`User.language`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication as BaseJWTAuthentication
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from webapp.core.zones import user_zone_name
from webapp.system import sessions
from webapp.system.models import ApiKey

SESSION_CLAIM = "sid"
KEY_PREFIX = "tl"


def activate_language(request: Any, user: Any) -> None:
    """The user's own language and time zone for this request (docs/system.md)."""
    language = getattr(user, "language", "")
    if language:
        translation.activate(language)
        request.LANGUAGE_CODE = translation.get_language()
    timezone.activate(user_zone_name(user))


def check_session(token: Any) -> None:
    """A JWT (access or refresh) carries its login session (`sid`) and its user (`user_id`):
    refused unless the session is active and belongs to that very user. Tokens are signed
    with SIMPLE_JWT's SIGNING_KEY, derived from SECRET_KEY (config/settings.py); even with
    that key, a token naming someone else's user id over one's own session is refused."""
    sid = token.get(SESSION_CLAIM)
    user_id = token.get(jwt_settings.USER_ID_CLAIM)
    if not sid or user_id is None or not sessions.is_active(sid, user_id):
        raise exceptions.AuthenticationFailed(_("This session has ended; log in again."),
                                              code="session_revoked")


class JWTAuthentication(BaseJWTAuthentication):
    """`Authorization: Bearer <access>`; refused once its login session is revoked, and
    unless that session is the token user's own."""

    def authenticate(self, request: Any) -> Any:
        result = super().authenticate(request)
        if result is None:
            return None
        user, token = result
        check_session(token)
        activate_language(request, user)
        return user, token


def make_key() -> tuple[str, str]:
    """A new key: (public prefix, full key). Only the hash of the full key is stored."""
    prefix = secrets.token_hex(4)
    return prefix, f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <key>` (or `X-Api-Key: <key>`) for machine clients."""

    keyword = "Api-Key"
    touch_every = timedelta(minutes=1)

    def authenticate(self, request: Any) -> Any:
        header = authentication.get_authorization_header(request).decode("latin-1")
        key = ""
        if header.startswith(self.keyword + " "):
            key = header[len(self.keyword) + 1:].strip()
        elif request.META.get("HTTP_X_API_KEY"):
            key = request.META["HTTP_X_API_KEY"].strip()
        if not key:
            return None
        parts = key.split("_")
        if len(parts) < 3 or parts[0] != KEY_PREFIX:
            raise exceptions.AuthenticationFailed(_("Invalid API key."), code="invalid_api_key")
        api_key = ApiKey.objects.select_related("user").filter(prefix=parts[1]).first()
        if api_key is None or not hmac.compare_digest(api_key.key_hash, hash_key(key)):
            raise exceptions.AuthenticationFailed(_("Invalid API key."), code="invalid_api_key")
        if not api_key.is_active or not api_key.user.is_active:
            raise exceptions.AuthenticationFailed(_("This API key is revoked or expired."),
                                                  code="invalid_api_key")
        now = timezone.now()
        if api_key.last_used is None or now - api_key.last_used > self.touch_every:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used=now)
        activate_language(request, api_key.user)
        return api_key.user, api_key

    def authenticate_header(self, request: Any) -> str:
        return self.keyword


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "webapp.system.authentication.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Api-Key <key>`"}


class JWTScheme(OpenApiAuthenticationExtension):
    target_class = "webapp.system.authentication.JWTAuthentication"
    name = "jwtAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
