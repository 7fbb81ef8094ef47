"""Device groups: named sets of devices (OTA campaigns, bulk operations, the console)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _

from webapp.core.errors import Conflict
from webapp.devices.models import Device, DeviceGroup


@transaction.atomic
def create_group(*, data: dict[str, Any]) -> DeviceGroup:
    if DeviceGroup.objects.filter(name=data["name"]).exists():
        raise Conflict(_("a group named {name!r} exists").format(name=data["name"]),
                       code="duplicate")
    return DeviceGroup.objects.create(**data)


@transaction.atomic
def update_group(*, group: DeviceGroup, data: dict[str, Any]) -> DeviceGroup:
    name = data.get("name")
    if name and DeviceGroup.objects.filter(name=name).exclude(pk=group.pk).exists():
        raise Conflict(_("a group named {name!r} exists").format(name=name), code="duplicate")
    for key, value in data.items():
        setattr(group, key, value)
    group.save()
    return group


@transaction.atomic
def delete_group(*, group: DeviceGroup) -> None:
    group.delete()


@transaction.atomic
def change_members(*, group: DeviceGroup, add: Iterable[Device] = (),
                   remove: Iterable[Device] = ()) -> DeviceGroup:
    """Add and remove devices (adding a member twice, or removing a non-member, is harmless)."""
    group.devices.add(*add)
    group.devices.remove(*remove)
    return group
