"""C2: a JWT carries its login session (`sid`) and its user (`user_id`), and both are checked.

The review's exploit: a viewer logs in, keeps their own `sid`, and forges
`{"user_id": <superuser id>, "sid": <own sid>}` with the signing key (leaked, or public as the
development key was). The session is not the superuser's: refused, for access and refresh
tokens alike. JWTs are signed with a key of their own derived from SECRET_KEY, so a token
signed with SECRET_KEY itself (what SimpleJWT does by default) is refused too."""

from __future__ import annotations

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from edge.crypto import derive_key
from tests.system.conftest import Org, login
from webapp.system.models import Role, User

pytestmark = pytest.mark.django_db


@pytest.fixture
def org(redis_prefix):
    return Org()


@pytest.fixture
def viewer(org):
    return org.user("vera", org.a, roles=[Role.objects.get(code="viewer")])


@pytest.fixture
def root(db):
    return User.objects.create_superuser("boss", "boss@example.com", "Pw-boss-2468")


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def own_tokens(user) -> dict[str, str]:
    response = login(APIClient(), user.username)
    assert response.status_code == 200, response.content
    return response.json()


def test_a_forged_user_id_over_ones_own_session_is_refused(viewer, root):
    tokens = own_tokens(viewer)
    sid = AccessToken(tokens["access"])["sid"]  # type: ignore[arg-type]
    assert bearer(tokens["access"]).get("/api/v1/auth/me/").status_code == 200

    forged = AccessToken()  # signed with SIMPLE_JWT["SIGNING_KEY"], as with a leaked key
    forged["user_id"] = str(root.pk)
    forged["sid"] = sid
    for path in ("/api/v1/auth/me/", "/api/v1/users/"):
        response = bearer(str(forged)).get(path)
        assert response.status_code == 401, path
        # The binding refused it (the signature is good): "This session has ended".
        assert "session" in response.json()["detail"], response.json()


def test_a_forged_refresh_token_gives_no_access_token(viewer, root):
    sid = RefreshToken(own_tokens(viewer)["refresh"])["sid"]  # type: ignore[arg-type]
    forged = RefreshToken()
    forged["user_id"] = str(root.pk)
    forged["sid"] = sid
    response = APIClient().post("/api/v1/auth/token/refresh/", {"refresh": str(forged)},
                                format="json")
    assert response.status_code == 401
    assert "access" not in response.json()


def test_a_session_of_the_same_user_still_works(viewer):
    """The binding does not refuse honest tokens: refresh, then use the new access token."""
    tokens = own_tokens(viewer)
    response = APIClient().post("/api/v1/auth/token/refresh/", {"refresh": tokens["refresh"]},
                                format="json")
    assert response.status_code == 200, response.content
    assert bearer(response.json()["access"]).get("/api/v1/auth/me/").status_code == 200
    assert bearer(own_tokens(viewer)["access"]).get("/api/v1/auth/me/").json()[
        "username"] == "vera"


@pytest.mark.parametrize("key", ["secret-key", "former-dev-key"])
def test_tokens_signed_with_another_key_are_refused(viewer, key):
    """JWTs have a signing key of their own: neither SECRET_KEY itself nor the former public
    development key signs a token the API accepts."""
    claims = dict(AccessToken(own_tokens(viewer)["access"]).payload)  # type: ignore[arg-type]
    signing_key = settings.SECRET_KEY if key == "secret-key" else \
        "thinglinks-dev-insecure-secret-key-change-me"
    token = jwt.encode(claims, signing_key, algorithm="HS256")
    response = bearer(token).get("/api/v1/auth/me/")
    assert response.status_code == 401
    assert "session" not in response.json()["detail"]  # the signature refused it


def test_the_jwt_signing_key_is_derived_not_the_secret_key():
    signing_key = settings.SIMPLE_JWT["SIGNING_KEY"]
    assert signing_key == derive_key(settings.SECRET_KEY, "jwt")
    assert signing_key != settings.SECRET_KEY
