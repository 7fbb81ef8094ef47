"""Second review: a notification channel's `roles` (role codes) reached the users of those
roles in every department. An operator of A made a channel naming a role of B's users (or
`administrator`), sent a test notification and got, in the 202 answer, the e-mail
addresses (or user names) of every such user on the platform, who also received the
operator's text. Role members are now the role's users within the channel's department
(and below); a channel without a department keeps them within its maker's scope."""

from __future__ import annotations

import pytest

from tests.rules.test_scope import World
from tests.security.rbac import own_cache_prefix  # noqa: F401  (fixtures)
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import Org

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db, redis_prefix, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    world = World(Org())
    org = world.org
    world.shared = org.role(scope="department")  # a role held in A and in B
    world.colleague = org.user("colleague", org.a1, roles=[world.shared])
    world.stranger = org.user("stranger", org.b, roles=[world.shared])
    return world


def _test_channel(world, channel_type: str) -> list:
    client = jwt_client(world.alice)
    created = client.post("/api/v1/notification-channels/", {
        "name": f"by-role-{channel_type}", "channel_type": channel_type,
        "roles": [world.shared.code]}, format="json")
    assert created.status_code == 201, created.content
    sent = client.post(f"/api/v1/notification-channels/{created.json()['id']}/test/", {},
                       format="json")
    assert sent.status_code == 202, sent.content
    return sent.json()


def test_email_channel_by_role_stays_in_the_channels_department(world):
    from django.core import mail

    answer = _test_channel(world, "email")
    shown = str(answer)
    assert "stranger@example.com" not in shown
    assert "colleague@example.com" in shown  # A1 is below the channel's department A
    assert not any("stranger@example.com" in m.to for m in mail.outbox)


def test_insite_channel_by_role_stays_in_the_channels_department(world):
    from webapp.system.models import Message

    answer = _test_channel(world, "insite")
    assert "stranger" not in str(answer)
    assert not Message.objects.filter(recipient=world.stranger).exists()
    assert Message.objects.filter(recipient=world.colleague).exists()
