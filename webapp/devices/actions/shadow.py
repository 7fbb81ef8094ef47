"""The device shadow: desired state set through the API, reported state from the device, and
their delta, versioned for optimistic concurrency (docs/devices.md "Shadow").

- ``desired`` is ``{service: {property: value}}``, only writable properties (access ``RW`` or
  ``RWE``), each value valid for the thing model;
- ``reported`` is ``{service: {property: {"value", "ts"}}}``: every accepted data message (the
  ingest worker) and the device's own ``/shadow/update``;
- ``delta`` is what desired asks for and reported does not show yet;
- ``version`` grows with every explicit shadow write (desired from the API, ``/shadow/update``
  from the device) — not with telemetry, so a client's read-modify-write only conflicts when
  the shadow itself changed.

The device receives the delta on ``/v1/devices/{id}/shadow/delta`` when desired changes and
when it reconnects, asks for the document on ``/shadow/get`` (answer on ``/shadow/getResponse``)
and reports on ``/shadow/update`` (answer on ``/shadow/updateResponse``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from edge.clock import now_ms
from edge.thingmodel import Problem
from webapp.core.errors import Conflict, DomainError
from webapp.core.redis import get_redis, keys
from webapp.devices import downlink
from webapp.devices.actions.commands import carrier
from webapp.devices.models import Device, DeviceShadow
from webapp.products.thingmodel import thing_model


def _reported(device: Device, row: DeviceShadow) -> dict[str, dict[str, dict[str, Any]]]:
    """Reported values from SQL merged with the latest values in Redis, newest wins."""
    reported: dict[str, dict[str, dict[str, Any]]] = {}
    for service, values in (row.reported or {}).items():
        reported[service] = {p: dict(v) for p, v in values.items() if isinstance(v, dict)}
    for service, blob in get_redis().hgetall(keys().latest(device.identifier)).items():
        current = reported.setdefault(service.decode(), {})
        for prop, entry in json.loads(blob).items():
            if current.get(prop, {}).get("ts", 0) <= entry.get("ts", 0):
                current[prop] = entry
    return reported


def compute_delta(desired: dict[str, Any], reported: dict[str, Any]) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    for service, values in desired.items():
        for prop, wanted in values.items():
            have = reported.get(service, {}).get(prop, {})
            if not isinstance(have, dict) or "value" not in have or have["value"] != wanted:
                delta.setdefault(service, {})[prop] = wanted
    return delta


def document(device: Device) -> dict[str, Any]:
    """The shadow as the API shows it (times in epoch ms; the API formats them)."""
    row, _created = DeviceShadow.objects.get_or_create(device=device)
    reported = _reported(device, row)
    desired = row.desired or {}
    return {"device": device.identifier, "desired": desired, "reported": reported,
            "delta": compute_delta(desired, reported), "version": row.version}


def validate_desired(device: Device, desired: Any, *, allow_null: bool) -> list[Problem]:
    """The problems of a desired state for the device's model (empty when valid)."""
    if not isinstance(desired, dict):
        return [Problem("wrong_type", None, None, _("desired must be an object of services"))]
    model = thing_model(device.product)
    problems: list[Problem] = []
    for service, values in desired.items():
        spec = model.services.get(service)
        if spec is None:
            problems.append(Problem("unknown_service", service, None,
                                    _("unknown service {service!r}").format(service=service)))
            continue
        if values is None and allow_null:
            continue
        if not isinstance(values, dict):
            problems.append(Problem("wrong_type", service, None,
                                    _("the desired state of a service is an object")))
            continue
        for prop, value in values.items():
            field = spec.properties.get(prop)
            if field is None:
                problems.append(Problem(
                    "unknown_property", service, prop,
                    _("unknown property {prop!r} in service {service!r}").format(
                        prop=prop, service=service)))
                continue
            if "W" not in field.access:
                problems.append(Problem(
                    "not_writable", service, prop,
                    _("{prop} is not writable (access {access})").format(
                        prop=prop, access=field.access)))
                continue
            if value is None and allow_null:
                continue
            _normalised, problem = field.check(value, service)
            if problem is not None:
                problems.append(problem)
    return problems


def _merge(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = {s: dict(v) for s, v in current.items()}
    for service, values in changes.items():
        if values is None:
            merged.pop(service, None)
            continue
        target = merged.setdefault(service, {})
        for prop, value in values.items():
            if value is None:
                target.pop(prop, None)
            else:
                target[prop] = value
        if not target:
            merged.pop(service, None)
    return merged


def _normalise(device: Device, desired: dict[str, Any]) -> dict[str, Any]:
    """Values as the model normalises them (e.g. a datetime text becomes epoch ms)."""
    model = thing_model(device.product)
    out: dict[str, Any] = {}
    for service, values in desired.items():
        if values is None:
            out[service] = None
            continue
        out[service] = {}
        for prop, value in values.items():
            if value is None:
                out[service][prop] = None
                continue
            normalised, _problem = model.services[service].properties[prop].check(value, service)
            out[service][prop] = normalised
    return out


def set_desired(*, device: Device, desired: Any, version: int | None = None,
                merge: bool = False) -> dict[str, Any]:
    """Replace (or, with ``merge``, patch — ``null`` removes) the desired state.

    ``version``, when given, must be the current one: otherwise 409 ``version_conflict``.
    The device receives the new delta after commit if it is online.
    """
    problems = validate_desired(device, desired, allow_null=merge)
    if problems:
        raise DomainError(problems[0].reason, code="invalid_shadow",
                          extra={"errors": [p.as_dict() for p in problems]})
    desired = _normalise(device, desired)
    with transaction.atomic():
        DeviceShadow.objects.get_or_create(device=device)
        row = DeviceShadow.objects.select_for_update().get(device=device)
        if version is not None and version != row.version:
            raise Conflict(
                _("the shadow is at version {current}, not {given}; read it again").format(
                    current=row.version, given=version),
                code="version_conflict", extra={"version": row.version})
        row.desired = _merge(row.desired or {}, desired) if merge else {
            s: v for s, v in desired.items() if v}
        row.version += 1
        row.save(update_fields=["desired", "version", "updated"])
        transaction.on_commit(lambda: send_delta(device))
    return document(device)


def _values_only(reported: dict[str, Any]) -> dict[str, Any]:
    return {s: {p: e.get("value") for p, e in values.items()} for s, values in reported.items()}


def send_delta(device: Device) -> bool:
    """Send the delta to the device when there is one and the device is reachable."""
    doc = document(device)
    if not doc["delta"]:
        return False
    return downlink.send(device.identifier, "shadow/delta", {
        "version": doc["version"], "delta": doc["delta"], "timestamp": now_ms(),
    }, via=carrier(device))


def send_deltas(identifiers: Iterable[str]) -> int:
    """Send their delta to devices that came online (and to their sub-devices)."""
    ids = list(identifiers)
    if not ids:
        return 0
    waiting = Device.objects.select_related("product", "gateway").filter(
        Q(identifier__in=ids) | Q(gateway__identifier__in=ids), shadow__version__gt=0)
    return sum(send_delta(device) for device in waiting)


def _reply(device: Device, suffix: str, body: dict[str, Any], mid: Any) -> None:
    downlink.send(device.identifier, suffix, body, mid=mid if isinstance(mid, int) else None,
                  via=carrier(device))


def answer_get(device: Device, mid: Any = None) -> None:
    """``/shadow/get`` → ``/shadow/getResponse`` with the whole document."""
    doc = document(device)
    _reply(device, "shadow/getResponse", {
        "statusCode": 0, "statusDesc": "successful", "version": doc["version"],
        "desired": doc["desired"], "reported": _values_only(doc["reported"]),
        "delta": doc["delta"], "timestamp": now_ms(),
    }, mid)


def report(device: Device, body: Any, ts: int, mid: Any = None) -> dict[str, Any]:
    """``/shadow/update`` from the device: ``{"reported": {service: {property: value}},
    "version"?}``. Valid values are merged into reported and the version grows; the answer on
    ``/shadow/updateResponse`` carries the new version and the remaining delta, or the errors.
    """
    answer: dict[str, Any]
    reported = body.get("reported") if isinstance(body, dict) else None
    given = body.get("version") if isinstance(body, dict) else None
    problems: list[Problem] = []
    accepted: dict[str, dict[str, Any]] = {}
    if not isinstance(reported, dict):
        problems.append(Problem("invalid_body", None, None,
                                'the body needs a "reported" object of services'))
    else:
        model = thing_model(device.product)
        for service, values in reported.items():
            ok, found = model.validate_service_data(service, values)
            problems.extend(found)
            if ok:
                accepted[service] = ok
    with transaction.atomic():
        DeviceShadow.objects.get_or_create(device=device)
        row = DeviceShadow.objects.select_for_update().get(device=device)
        if isinstance(given, int) and not isinstance(given, bool) and given != row.version:
            problems.insert(0, Problem("version_conflict", None, None,
                                       f"the shadow is at version {row.version}, not {given}"))
            accepted = {}
        if accepted:
            current = row.reported or {}
            for service, values in accepted.items():
                target = current.setdefault(service, {})
                for prop, value in values.items():
                    old = target.get(prop)
                    if not isinstance(old, dict) or old.get("ts", 0) <= ts:
                        target[prop] = {"value": value, "ts": ts}
            row.reported = current
            row.version += 1
            row.save(update_fields=["reported", "version", "updated"])
    doc = document(device)
    answer = {"statusCode": 0 if not problems else 1,
              "statusDesc": "successful" if not problems else problems[0].reason,
              "version": doc["version"], "delta": doc["delta"]}
    if problems:
        answer["errors"] = [p.as_dict() for p in problems]
    _reply(device, "shadow/updateResponse", answer, mid)
    return answer
