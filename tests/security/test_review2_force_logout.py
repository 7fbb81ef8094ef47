"""Second review: ending someone's logins was not checked against their rights. An operator
allowed to end sessions could keep a superuser (or an administrator) of their department
out, ending each new login at once. Ending the logins of a user who holds more than the
actor is refused, as changing or resetting them is."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.security.rbac import org_fixture, own_cache_prefix  # noqa: F401
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import PASSWORD
from webapp.system.models import LoginSession, User

pytestmark = pytest.mark.django_db


@pytest.fixture
def boss(org):
    user = User.objects.create_superuser("boss", "boss@example.com", PASSWORD)
    user.department = org.a
    user.must_change_password = False
    user.save()
    return user


@pytest.fixture
def kicker(org):
    return org.user("kicker", org.a, ["system.view_user", "system.view_loginsession",
                                      "system.logout_loginsession"], scope="department")


def _still_in(client: APIClient) -> bool:
    return client.get("/api/v1/auth/me/").status_code == 200


def test_a_superusers_logins_cannot_be_ended_by_an_operator(boss, kicker):
    victim = jwt_client(boss)
    attacker = jwt_client(kicker)
    refused = attacker.post(f"/api/v1/users/{boss.pk}/logout/")
    assert refused.status_code == 403, refused.content
    session = LoginSession.objects.filter(user=boss, revoked__isnull=True).get()
    assert attacker.delete(f"/api/v1/online-users/{session.pk}/").status_code == 403
    assert attacker.post(f"/api/v1/online-users/{session.pk}/logout/").status_code == 403
    assert _still_in(victim)


def test_a_colleagues_logins_are_still_ended(org, kicker):
    colleague = org.user("colleague", org.a, scope="department")
    victim = jwt_client(colleague)
    done = jwt_client(kicker).post(f"/api/v1/users/{colleague.pk}/logout/")
    assert done.status_code == 200 and done.json()["count"] == 1
    assert not _still_in(victim)
