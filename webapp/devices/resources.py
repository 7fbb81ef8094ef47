"""Bulk import and export of devices (django-import-export), shared by the admin and the API.

One import is one transaction: any invalid row rolls the whole file back and every row's
errors are reported. The importer's data scope (`webapp.system.scope`) holds as in the API: a row
may only update a device the importer reaches, and give it a product, gateway, department or
device group the importer reaches (else a per-row error on that column); a new device
without a department gets the importer's own, as a device created through the API does.
New devices get a generated secret (or the file's ``secret`` column); the plain secrets are
kept only for a one-time download (:mod:`webapp.devices.secrets_once`).
Built for 10,000-row files: existing devices, products, gateways and groups are loaded once,
devices are written with ``bulk_create`` / ``bulk_update``, shadows and group memberships in
bulk, and the registry is published in one Redis pipeline after commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _
from import_export import fields, resources, widgets
from import_export.instance_loaders import CachedInstanceLoader

from edge.crypto import encrypt_secret, generate_secret
from webapp.devices import registry
from webapp.devices.choices import DeviceStatus, NodeType
from webapp.devices.models import Device, DeviceGroup, DeviceShadow
from webapp.products.models import (
    RESERVED_DEVICE_IDENTIFIERS,
    Product,
    reserved_identifier_problem,
)
from webapp.system import scope
from webapp.system.actors import recorded_user
from webapp.system.models import Department

GROUP_SEPARATOR = ","
BULK_BATCH = 1000


class LookupWidget(widgets.Widget):
    """A foreign key by a natural key, resolved from a table loaded once per import."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
        self.table: dict[str, Any] = {}

    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> Any:
        if value in (None, ""):
            return None
        key = str(value).strip()
        try:
            return self.table[key]
        except KeyError:
            raise ValueError(_("unknown {what} {key!r}").format(what=self.what, key=key)) from None

    def render(self, value: Any, obj: Any = None, **kwargs: Any) -> Any:
        if value is None:
            return ""
        return getattr(value, "identifier", None) or getattr(value, "pk", "")


class JSONWidget(widgets.Widget):
    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> Any:
        if value in (None, ""):
            return {}
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise ValueError(_("not valid JSON: {error}").format(error=exc)) from None
        if not isinstance(parsed, dict):
            raise ValueError(_("tags must be a JSON object"))
        return parsed

    def render(self, value: Any, obj: Any = None, **kwargs: Any) -> Any:
        return json.dumps(value or {}, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Reach:
    """What a scoped importer reaches among the records a file names, loaded once per file
    (the rule of `scope.can_assign` and of the API's related fields, without a query per
    row): primary keys of devices, products and gateways, department ids (their own
    included), the names of existing device groups they do not reach and which of the file's
    devices are already in those groups (identifier, group name)."""

    devices: frozenset[int]
    products: frozenset[int]
    gateways: frozenset[int]
    departments: frozenset[int]
    foreign_groups: frozenset[str]
    foreign_members: frozenset[tuple[str, str]]


def split_groups(value: Any) -> list[str]:
    return [g.strip() for g in str(value or "").split(GROUP_SEPARATOR) if g.strip()]


def spreadsheet_safe_secret() -> str:
    """A generated secret that a spreadsheet opening the secrets file shows as it is (not
    starting with '-', which would make it a formula)."""
    while True:
        secret = generate_secret()
        if not secret.startswith("-"):
            return secret


class DeviceResource(resources.ModelResource):
    identifier = fields.Field(attribute="identifier", column_name="identifier",
                              widget=widgets.CharWidget())
    name = fields.Field(attribute="name", column_name="name", widget=widgets.CharWidget())
    status = fields.Field(attribute="status", column_name="status", saves_null_values=False,
                          widget=widgets.CharWidget(allow_blank=False))
    fw_version = fields.Field(attribute="fw_version", column_name="fw_version",
                              widget=widgets.CharWidget())
    sw_version = fields.Field(attribute="sw_version", column_name="sw_version",
                              widget=widgets.CharWidget())
    address = fields.Field(attribute="address", column_name="address",
                           widget=widgets.CharWidget())
    description = fields.Field(attribute="description", column_name="description",
                               widget=widgets.CharWidget())
    product = fields.Field(attribute="product", column_name="product",
                           widget=LookupWidget("product"))
    gateway = fields.Field(attribute="gateway", column_name="gateway",
                           widget=LookupWidget("gateway"))
    department = fields.Field(attribute="department", column_name="department",
                              widget=LookupWidget("department"))
    tags = fields.Field(attribute="tags", column_name="tags", widget=JSONWidget())
    groups = fields.Field(column_name="groups", readonly=True)
    node_type = fields.Field(attribute="node_type", column_name="node_type", readonly=True)
    connect_status = fields.Field(attribute="connect_status", column_name="connect_status",
                                  readonly=True)
    last_seen = fields.Field(attribute="last_seen", column_name="last_seen", readonly=True,
                             widget=widgets.DateTimeWidget())

    class Meta:
        model = Device
        fields = ("identifier", "name", "product", "gateway", "status", "node_type",
                  "connect_status", "last_seen", "fw_version", "sw_version", "tags", "groups",
                  "department", "latitude", "longitude", "address", "description")
        export_order = fields
        import_id_fields = ("identifier",)
        instance_loader_class = CachedInstanceLoader
        use_bulk = True
        batch_size = BULK_BATCH
        skip_diff = True
        clean_model_instances = False  # validated per row without a query, see validate_instance

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user = kwargs.get("user")
        self.secrets: dict[str, str] = {}
        self.new_identifiers: list[str] = []
        self.memberships: dict[str, list[str]] = {}
        self.seen: set[str] = set()
        self.reach: Reach | None = None  # None: the platform or an all-data user
        self.may_change = True

    # lookups loaded once ---------------------------------------------------------------

    def before_import(self, dataset: Any, **kwargs: Any) -> None:
        self.user = kwargs.get("user", self.user)
        headers = set(dataset.headers or ())
        missing = {"identifier", "product"} - headers
        if missing:
            raise ValidationError(_("the file needs the columns {columns}").format(
                columns=", ".join(sorted(missing))))

        def column(name: str) -> set[str]:
            if name not in headers:
                return set()
            return {str(v).strip() for v in dataset[name] if v not in (None, "")}

        self.fields["product"].widget.table = {
            p.identifier: p for p in Product.objects.filter(identifier__in=column("product"))}
        self.fields["gateway"].widget.table = {
            g.identifier: g for g in Device.objects.filter(
                identifier__in=column("gateway"), node_type=NodeType.GATEWAY)}
        self.fields["department"].widget.table = {
            str(d.pk): d for d in Department.objects.filter(
                pk__in=[v for v in column("department") if v.isdigit()])}
        self.reach = self._load_reach(column)
        # Importing needs the permission to add devices; a row that updates one, to change.
        self.may_change = self.user is None or self.user.has_perm("devices.change_device")

    def _load_reach(self, column: Any) -> Reach | None:
        user = self.user
        if user is None or scope.user_scope(user).everything:
            return None

        def reached(queryset: Any) -> frozenset[int]:
            return frozenset(scope.restrict(queryset, user).values_list("pk", flat=True))

        departments = set(scope.department_queryset(user).filter(
            pk__in=[int(v) for v in column("department") if v.isdigit()]).values_list(
            "pk", flat=True))
        own = getattr(user, "department_id", None)
        if own is not None:
            departments.add(own)
        names = {n for value in column("groups") for n in split_groups(value)}
        groups = DeviceGroup.objects.filter(name__in=names)
        foreign = (set(groups.values_list("name", flat=True))
                   - set(scope.restrict(groups, user).values_list("name", flat=True)))
        members = Device.groups.through.objects.filter(
            devicegroup__name__in=foreign, device__identifier__in=column("identifier"))
        return Reach(
            devices=reached(Device.objects.filter(identifier__in=column("identifier"))),
            products=reached(Product.objects.filter(identifier__in=column("product"))),
            gateways=reached(Device.objects.filter(identifier__in=column("gateway"))),
            departments=frozenset(departments),
            foreign_groups=frozenset(foreign),
            foreign_members=frozenset(members.values_list("device__identifier",
                                                          "devicegroup__name")))

    def get_queryset(self) -> Any:
        return Device.objects.select_related("product")

    # per row ------------------------------------------------------------------------------

    def import_instance(self, instance: Device, row: Any, **kwargs: Any) -> None:
        errors: dict[str, Any] = {}
        original_product = instance.product_id
        original_gateway = instance.gateway_id
        original_department = instance.department_id
        try:
            super().import_instance(instance, row, **kwargs)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        if "department" not in errors and row.get("department") in (None, ""):
            # No department: a new device gets the importer's, an existing one keeps its own.
            instance.department_id = (original_department if instance.pk is not None
                                      else getattr(self.user, "department_id", None))
        if self.reach is not None:
            self._check_reach(instance, row, errors, original_product, original_gateway,
                              original_department)
        if instance.pk is not None and not self.may_change:
            errors.setdefault("identifier", []).append(_(
                "device {identifier!r} exists and you may not change devices").format(
                identifier=instance.identifier))
        identifier = str(row.get("identifier") or "").strip()
        if identifier in self.seen:
            errors["identifier"] = [_("{identifier} appears twice in the file").format(
                identifier=identifier)]
        self.seen.add(identifier)
        secret = str(row.get("secret") or "").strip()
        if secret and instance.pk is not None:
            errors["secret"] = [_("a secret can only be given for a new device; rotate it "
                                  "instead")]
        elif secret and len(secret) < 8:
            errors["secret"] = [_("a device secret has at least 8 characters")]
        if instance.pk is not None and instance.product_id != original_product:
            errors["product"] = [_("a device cannot move to another product")]
        if "groups" in row:
            self.memberships[identifier] = split_groups(row.get("groups"))
        if errors:
            raise ValidationError(errors)

    def _check_reach(self, instance: Device, row: Any, errors: dict[str, Any],
                     product: int | None, gateway: int | None, department: int | None) -> None:
        """Per-row errors for what the importer may not touch or assign. A value the row
        leaves as it was (an exported file imported back) is not an assignment."""
        reach = self.reach
        assert reach is not None
        outside = _("{what} {value!r} is outside your data scope")
        if instance.pk is not None and instance.pk not in reach.devices:
            errors.setdefault("identifier", []).append(outside.format(
                what=_("device"), value=instance.identifier))
        if (instance.product_id is not None and instance.product_id != product
                and instance.product_id not in reach.products and "product" not in errors):
            errors["product"] = [outside.format(what=_("product"),
                                                value=instance.product.identifier)]
        if (instance.gateway_id is not None and instance.gateway_id != gateway
                and instance.gateway_id not in reach.gateways and instance.gateway is not None):
            errors.setdefault("gateway", []).append(outside.format(
                what=_("gateway"), value=instance.gateway.identifier))
        if (instance.department_id is not None and instance.department_id != department
                and instance.department_id not in reach.departments):
            errors.setdefault("department", []).append(outside.format(
                what=_("department"), value=str(instance.department_id)))
        foreign = [n for n in split_groups(row.get("groups")) if n in reach.foreign_groups
                   and (instance.identifier, n) not in reach.foreign_members]
        if "groups" in row and foreign:
            errors.setdefault("groups", []).extend(
                outside.format(what=_("device group"), value=name) for name in foreign)

    def validate_instance(self, instance: Device, import_validation_errors: Any = None,
                          validate_unique: bool = True) -> None:
        errors = dict(import_validation_errors or {})
        # Foreign keys were resolved by the lookup widgets; Django's own check would query the
        # database once per row and key.
        try:
            instance.clean_fields(exclude=[*errors, "secret_encrypted", "created_by", "product",
                                           "gateway", "department"])
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        if instance.product_id is None and "product" not in errors:
            errors["product"] = [_("a device needs a product")]
        reserved = reserved_identifier_problem(instance.identifier, RESERVED_DEVICE_IDENTIFIERS) \
            if instance.pk is None else ""
        if reserved:
            errors.setdefault("identifier", []).append(reserved)
        gateway = instance.gateway
        if gateway is not None and instance.product_id is not None \
                and instance.product.product_type == "gateway":
            errors.setdefault("gateway", []).append(_("a gateway cannot be a sub-device"))
        if errors:
            raise ValidationError(errors)

    def before_save_instance(self, instance: Device, row: Any, **kwargs: Any) -> None:
        instance.node_type = (NodeType.SUB if instance.gateway is not None else
                              NodeType.GATEWAY if instance.product.product_type == "gateway"
                              else NodeType.DIRECT)
        if instance.pk is None:
            plain = str(row.get("secret") or "").strip() or spreadsheet_safe_secret()
            instance.secret_encrypted = encrypt_secret(plain)
            instance.created_by = recorded_user(self.user)
            if not instance.status:
                instance.status = DeviceStatus.UNACTIVATED
            self.secrets[instance.identifier] = plain
            self.new_identifiers.append(instance.identifier)

    def get_bulk_update_fields(self) -> list[str]:
        return ["name", "gateway", "status", "node_type", "fw_version", "sw_version", "tags",
                "department", "latitude", "longitude", "address", "description"]

    # after every row ----------------------------------------------------------------------

    def after_import(self, dataset: Any, result: Any, **kwargs: Any) -> None:
        if result.has_errors() or result.has_validation_errors():
            return
        ids = dict(Device.objects.filter(identifier__in=self.new_identifiers)
                   .values_list("identifier", "pk"))
        DeviceShadow.objects.bulk_create(
            [DeviceShadow(device_id=pk) for pk in ids.values()], batch_size=BULK_BATCH,
            ignore_conflicts=True)
        self._save_memberships()
        if kwargs.get("dry_run"):
            return
        touched = [str(i).strip() for i in dataset["identifier"]]
        transaction.on_commit(lambda: registry.publish_devices(touched))

    def _save_memberships(self) -> None:
        if not self.memberships:
            return
        names = {n for group in self.memberships.values() for n in group}
        groups = {g.name: g for g in DeviceGroup.objects.filter(name__in=names)}
        # A group the file creates belongs to the importer's department, as through the API.
        department = getattr(self.user, "department_id", None)
        missing = [DeviceGroup(name=n, department_id=department)
                   for n in sorted(names - set(groups))]
        DeviceGroup.objects.bulk_create(missing)
        groups.update({g.name: g for g in DeviceGroup.objects.filter(
            name__in=[g.name for g in missing])})
        devices = dict(Device.objects.filter(identifier__in=list(self.memberships))
                       .values_list("identifier", "pk"))
        through = Device.groups.through
        replaced = through.objects.filter(device_id__in=list(devices.values()))
        if self.reach is not None:
            # Memberships in groups the importer does not reach are not theirs to remove.
            replaced = replaced.filter(devicegroup_id__in=scope.restrict(
                DeviceGroup.objects.all(), self.user).values("pk"))
        replaced.delete()
        through.objects.bulk_create(
            [through(device_id=devices[identifier], devicegroup_id=groups[name].pk)
             for identifier, names_of in self.memberships.items() if identifier in devices
             for name in names_of], batch_size=BULK_BATCH, ignore_conflicts=True)

    # export -------------------------------------------------------------------------------

    def dehydrate_groups(self, device: Device) -> str:
        return GROUP_SEPARATOR.join(g.name for g in device.groups.all())

    def export(self, queryset: Any = None, **kwargs: Any) -> Any:
        if queryset is not None:
            queryset = queryset.select_related("product", "gateway", "department") \
                .prefetch_related("groups")
        return super().export(queryset=queryset, **kwargs)
