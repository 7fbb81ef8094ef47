"""Second review: publishing a notice sent an in-site message to its whole audience, on the
whole platform: a department manager of A with the notice permissions messaged every user
of every department (audience "all", or a role held elsewhere), e.g. a phishing link in the
name of the platform, and learnt how many they were. The audience now stops at the
publisher's data scope (an administrator's is everyone)."""

from __future__ import annotations

import pytest

from tests.security.rbac import org_fixture, own_cache_prefix  # noqa: F401
from tests.security.scoped_operator import jwt_client
from webapp.system.models import Message

pytestmark = pytest.mark.django_db

NOTICE_PERMS = ("system.view_notice", "system.add_notice", "system.change_notice")


@pytest.mark.parametrize("audience", ["all", "roles"])
def test_a_scoped_publisher_reaches_only_users_of_their_scope(org, audience):
    publisher = org.user("announcer", org.a, NOTICE_PERMS, scope="department_and_below")
    shared = org.role(scope="department")
    colleague = org.user("colleague", org.a1, roles=[shared])
    stranger = org.user("stranger", org.b, roles=[shared])
    client = jwt_client(publisher)
    notice = client.post("/api/v1/notices/", {
        "title": "Urgent", "content": "Log in at https://phish.example/", "audience": audience,
        "roles": [shared.pk]}, format="json")
    assert notice.status_code == 201, notice.content
    published = client.post(f"/api/v1/notices/{notice.json()['id']}/publish/")
    assert published.status_code == 200, published.content
    assert not Message.objects.filter(recipient=stranger).exists()
    assert Message.objects.filter(recipient=colleague).exists()


def test_an_administrator_still_reaches_everyone(org, admin_user):
    stranger = org.user("stranger", org.b)
    admin_user.must_change_password = False
    admin_user.save()
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(admin_user)
    notice = client.post("/api/v1/notices/", {"title": "All", "content": "hello",
                                              "audience": "all"}, format="json")
    assert notice.status_code == 201, notice.content
    client.post(f"/api/v1/notices/{notice.json()['id']}/publish/")
    assert Message.objects.filter(recipient=stranger).exists()
