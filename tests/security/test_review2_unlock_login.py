"""Second review: `POST /login-logs/unlock/` lifted the login lockout of any user name. An
operator allowed to unlock logins could guess a superuser's (or another department's
user's) password without end: five guesses, unlock, five more. Unlocking now reaches only
users of the caller's data scope who hold no more than the caller (as a password reset)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.security.rbac import org_fixture, own_cache_prefix  # noqa: F401
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import PASSWORD, login
from webapp.system.models import User

pytestmark = pytest.mark.django_db
FROM = {"REMOTE_ADDR": "10.7.7.7"}


def _lock(username: str) -> None:
    for _ in range(6):
        login(APIClient(), username, "wrong-guess", **FROM)
    assert login(APIClient(), username, PASSWORD, **FROM).status_code == 429


@pytest.fixture
def helpdesk(org):
    return org.user("helpdesk", org.a, ["system.view_loginlog", "system.unlock_login"],
                    scope="department")


def test_a_superusers_lockout_cannot_be_lifted_by_an_operator(org, helpdesk):
    boss = User.objects.create_superuser("boss", "boss@example.com", PASSWORD)
    boss.department = org.a
    boss.save(update_fields=["department"])
    _lock("boss")
    refused = jwt_client(helpdesk).post("/api/v1/login-logs/unlock/", {"username": "boss"},
                                        format="json")
    assert refused.status_code == 403, refused.content
    assert login(APIClient(), "boss", PASSWORD, **FROM).status_code == 429


def test_another_departments_user_cannot_be_unlocked(org, helpdesk):
    org.user("bruno", org.b, scope="department")
    _lock("bruno")
    refused = jwt_client(helpdesk).post("/api/v1/login-logs/unlock/", {"username": "bruno"},
                                        format="json")
    assert refused.status_code == 404, refused.content
    assert login(APIClient(), "bruno", PASSWORD, **FROM).status_code == 429


def test_a_colleague_is_still_unlocked(org, helpdesk):
    org.user("annie", org.a, scope="department")
    _lock("annie")
    done = jwt_client(helpdesk).post("/api/v1/login-logs/unlock/", {"username": "annie"},
                                     format="json")
    assert done.status_code == 204, done.content
    assert login(APIClient(), "annie", PASSWORD, **FROM).status_code == 200

