"""Second review: the admin's device message log (`/admin/telemetry/devicemessage/`) listed
the raw messages of every device: any staff user allowed to view messages (a viewer of
department A) read the payloads of department B's devices. It now lists the messages of the
devices in the user's data scope (all of them for users who see all data)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tests.security.rbac import org_fixture, own_cache_prefix  # noqa: F401
from tests.system.conftest import PASSWORD, make_device, make_product
from webapp.telemetry.models import DeviceMessage

pytestmark = pytest.mark.django_db


@pytest.fixture
def messages(org):
    make_device("dev-a", make_product("p-a", org.a), org.a)
    make_device("dev-b", make_product("p-b", org.b), org.b)
    now = timezone.now()
    return {name: DeviceMessage.objects.create(
        device_identifier=name, ts=now, direction="up", topic=f"/v1/devices/{name}/datas",
        payload=f'{{"secret-reading-of": "{name}"}}', result="ok")
        for name in ("dev-a", "dev-b", "gone-device")}


def test_a_viewer_reads_only_the_messages_of_devices_in_scope(org, client, messages):
    org.user("watcher", org.a, ["telemetry.view_devicemessage"], scope="department",
             staff=True)
    assert client.login(username="watcher", password=PASSWORD)
    page = client.get("/admin/telemetry/devicemessage/")
    assert page.status_code == 200
    shown = {m.device_identifier for m in page.context["cl"].result_list}
    assert shown == {"dev-a"}
    other = client.get(f"/admin/telemetry/devicemessage/{messages['dev-b'].pk}/change/")
    assert other.status_code in (302, 404)
    assert "secret-reading-of" not in other.content.decode()


def test_an_administrator_still_reads_every_message(client, admin_user, messages):
    admin_user.must_change_password = False
    admin_user.save()
    client.force_login(admin_user)
    page = client.get("/admin/telemetry/devicemessage/")
    assert {m.device_identifier for m in page.context["cl"].result_list} == {
        "dev-a", "dev-b", "gone-device"}
