"""What this app publishes for the edge (docs/bus.md): ACL rules and the registration secret
in the product hash, ACL rules, envelope keys and the owners (department, creator) in the
device hash (through the field providers of `webapp.devices.registry`), and
`tl:app:{key id}` for API keys allowed to connect as MQTT application clients, with the data
scope of their user. A key is published again (or removed) whenever what decides it may
have changed: the key, its user, roles, permissions, menus, departments."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection as db_connection
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from webapp.core.redis import get_redis, keys
from webapp.devices import registry as devices_registry
from webapp.devices.models import Device
from webapp.products.models import Product
from webapp.system.scope import department_queryset, user_scope

APP_PERMISSION = "access.mqtt_application"


def _rules_json(rules: Any) -> str:
    return json.dumps([rule.as_registry() for rule in rules], separators=(",", ":"))


def product_fields(product: Product) -> dict[str, str]:
    from webapp.access.models import AclRule, ProductRegistration

    registration = ProductRegistration.objects.filter(product=product, enabled=True).first()
    rules = AclRule.objects.filter(product=product, device__isnull=True, enabled=True)
    return {
        "secret": registration.secret_encrypted if registration is not None else "",
        "acl": _rules_json(rules),
    }


def _owners(device: Device) -> dict[str, str]:
    """Who the device belongs to, for the data scope of application clients."""
    return {"department": str(device.department_id or ""),
            "owner": str(device.created_by_id or "")}


def device_fields(device: Device) -> dict[str, str]:
    from webapp.access.models import AclRule, DeviceKeys

    fields = _owners(device)
    rules = list(AclRule.objects.filter(device=device, enabled=True))
    if rules:
        fields["acl"] = _rules_json(rules)
    envelope = DeviceKeys.objects.filter(device=device).first()
    if envelope is not None:
        for name in ("sign_key", "encrypt_key", "encrypt_vector"):
            token = getattr(envelope, f"{name}_encrypted")
            if token:
                fields[name] = token
    return fields


def _device_fields_bulk(devices: list[Device]) -> dict[int, dict[str, str]]:
    """`device_fields` of many devices in two queries (bulk import, start-up)."""
    from webapp.access.models import AclRule, DeviceKeys

    out: dict[int, dict[str, str]] = {device.pk: _owners(device) for device in devices}
    rules: dict[int | None, list[Any]] = {}
    for rule in AclRule.objects.filter(device__in=devices, enabled=True):
        rules.setdefault(rule.device_id, []).append(rule)
    for pk, device_rules in rules.items():
        if pk is not None:  # always: the query names devices
            out[pk]["acl"] = _rules_json(device_rules)
    for envelope in DeviceKeys.objects.filter(device__in=devices):
        for name in ("sign_key", "encrypt_key", "encrypt_vector"):
            token = getattr(envelope, f"{name}_encrypted")
            if token:
                out[envelope.device_id][name] = token
    return out


device_fields.bulk = _device_fields_bulk  # type: ignore[attr-defined]


def publish_product(product: Product) -> None:
    devices_registry.publish_product(product)


def publish_device(device: Device) -> None:
    devices_registry.publish_device(
        Device.objects.select_related("product", "gateway").get(pk=device.pk))


# -- application clients ------------------------------------------------------------------


def app_fields(api_key: Any) -> dict[str, str] | None:
    """The `tl:app:{prefix}` hash of an active key whose user may connect MQTT application
    clients, with the user's data scope: `scope` `all`, or `limited` with `departments`
    (ids, comma-separated) and `owner` (the user's id when the scope includes the records
    they created); None when the key may not connect."""
    user = api_key.user
    if not (api_key.is_active and user.is_active and user.has_perm(APP_PERMISSION)):
        return None
    fields = {"key_hash": api_key.key_hash, "user": user.get_username()}
    if api_key.expires is not None:
        fields["expires"] = str(int(api_key.expires.timestamp() * 1000))
    scope = user_scope(user)
    if scope.everything:
        fields["scope"] = "all"
    else:
        fields["scope"] = "limited"
        fields["departments"] = ",".join(
            str(pk) for pk in department_queryset(user).order_by("pk").values_list(
                "pk", flat=True))
        fields["owner"] = str(user.pk) if scope.own_records else ""
    return fields


def _publish_into(pipe: Any, api_key: Any) -> None:
    k = keys()
    fields = app_fields(api_key)
    pipe.delete(k.app(api_key.prefix))
    if fields is not None:
        pipe.hset(k.app(api_key.prefix), mapping=fields)
    pipe.publish(k.registry_channel, f"app:{api_key.prefix}")


def publish_app_key(api_key: Any) -> None:
    """``tl:app:{prefix}`` for an active key whose user may connect MQTT application
    clients; removed otherwise. The edge drops the clients of a key that changed."""
    pipe = get_redis().pipeline()
    _publish_into(pipe, api_key)
    pipe.execute()


def unpublish_app_key(prefix: str) -> None:
    k = keys()
    r = get_redis()
    pipe = r.pipeline()
    pipe.delete(k.app(prefix))
    pipe.publish(k.registry_channel, f"app:{prefix}")
    pipe.execute()


def republish_app_keys(user_id: int | None = None) -> int:
    """Publish again every key that is not revoked (those of one user with ``user_id``): a
    key whose user lost the permission or was disabled is removed, one whose scope changed
    is updated, and the edge drops the clients of both."""
    from webapp.system.backends import forget_permissions
    from webapp.system.models import ApiKey

    api_keys = ApiKey.objects.select_related("user").filter(revoked__isnull=True)
    if user_id is not None:
        api_keys = api_keys.filter(user_id=user_id)
    users: dict[int, Any] = {}
    pipe = get_redis().pipeline(transaction=False)
    count = 0
    for api_key in api_keys:
        # One user object per user: its permissions and scope are computed once, afresh.
        user = users.get(api_key.user_id)
        if user is None:
            user = users[api_key.user_id] = api_key.user
            forget_permissions(user)
        api_key.user = user
        _publish_into(pipe, api_key)
        count += 1
    pipe.execute()
    return count


def _republish_all_later() -> None:
    """Republish every key once the transaction commits (once per transaction)."""
    if any(entry[1] is republish_app_keys for entry in db_connection.run_on_commit):
        return
    transaction.on_commit(republish_app_keys)


def _rights_changed(sender: Any, action: str = "post_save", **kwargs: Any) -> None:
    """A role, menu, department, group or a permission or role assignment changed."""
    if action.startswith("post_"):
        _republish_all_later()


def _user_saved(sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    """A user changed (disabled, department, superuser...): their keys are published again;
    a login (only `last_login` saved) changes nothing."""
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    user_id = instance.pk
    transaction.on_commit(lambda: republish_app_keys(user_id))


def _api_key_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    transaction.on_commit(lambda: publish_app_key(instance))


def _api_key_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    prefix = instance.prefix
    transaction.on_commit(lambda: unpublish_app_key(prefix))


def connect() -> None:
    """Called once from the app config: join the devices registry and follow API keys and
    everything that decides them."""
    from django.contrib.auth.models import Group

    from webapp.system.models import ApiKey, Department, Menu, Role, User

    if product_fields not in devices_registry.product_field_providers:
        devices_registry.product_field_providers.append(product_fields)
    if device_fields not in devices_registry.device_field_providers:
        devices_registry.device_field_providers.append(device_fields)
    if republish_app_keys not in devices_registry.republishers:
        devices_registry.republishers.append(republish_app_keys)
    post_save.connect(_api_key_saved, sender=ApiKey, dispatch_uid="access.api_key_saved")
    post_delete.connect(_api_key_deleted, sender=ApiKey, dispatch_uid="access.api_key_deleted")
    post_save.connect(_user_saved, sender=User, dispatch_uid="access.user_saved")
    for model in (Role, Menu, Department):
        for signal in (post_save, post_delete):
            signal.connect(_rights_changed, sender=model,
                           dispatch_uid=f"access.rights.{signal is post_save}.{model.__name__}")
    for through in (User.roles.through, User.user_permissions.through, User.groups.through,
                    Role.permissions.through, Role.menus.through, Role.departments.through,
                    Group.permissions.through):
        m2m_changed.connect(_rights_changed, sender=through,
                            dispatch_uid=f"access.rights.m2m.{through.__name__}")
