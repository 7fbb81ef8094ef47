"""The device admin stops at the user's data scope: its sidebar filters list only the
products and groups within reach, and a device's group choices too."""

from __future__ import annotations

import pytest

from tests.system.conftest import Org, make_device, make_product

pytestmark = pytest.mark.django_db

PERMS = ("devices.view_device", "devices.change_device", "devices.view_devicegroup",
         "products.view_product")


def test_device_admin_filters_and_choices_stop_at_the_scope(client, redis_prefix):
    """A's staff user sees A's product and group in the sidebar filters and A's group among
    a device's choices, never B's (the plain filters listed every department's)."""
    from webapp.devices.models import DeviceGroup

    org = Org()
    product_a, product_b = make_product("p-a", org.a), make_product("p-b", org.b)
    make_product("p-a2", org.a)  # a filter with a single choice is not shown
    device = make_device("dev-a", product_a, org.a)
    make_device("dev-b", product_b, org.b)
    group_a = DeviceGroup.objects.create(name="group-a", department=org.a)
    DeviceGroup.objects.create(name="group-a2", department=org.a)
    DeviceGroup.objects.create(name="group-b", department=org.b)
    device.groups.add(group_a)
    alice = org.user("alice", org.a, PERMS, scope="department", staff=True)
    client.force_login(alice)

    page = client.get("/admin/devices/device/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "dev-a" in body and "dev-b" not in body
    filters = {spec.field_path: [str(choice["display"])
                                 for choice in spec.choices(page.context["cl"])]
               for spec in page.context["cl"].filter_specs if hasattr(spec, "field_path")}
    assert str(product_a) in filters["product"] and str(product_b) not in filters["product"]
    assert "group-a" in filters["groups"] and "group-b" not in filters["groups"]
    assert "(p-b)" not in body and "group-b" not in body

    change = client.get(f"/admin/devices/device/{device.pk}/change/")
    assert change.status_code == 200
    choices = {str(g) for g in change.context["adminform"].form.fields["groups"].queryset}
    assert choices == {"group-a", "group-a2"}
