"""Gateways and their sub-devices: the ThingLinks ``/topo/add``, ``/topo/delete``,
``/topo/update`` and ``/topo/query`` requests (docs/devices.md, "Gateways"), each answered on
``…/topo/{op}Response`` with ``{"statusCode", "statusDesc", "data": [...]}``.

A sub-device is a device with ``node_type=sub`` and ``gateway`` set; the registry publishes
that to the edge, which then accepts the gateway's ``datas`` entries for it and lets the
gateway use its topics. The sub-device's product is named by ``productIdentification`` in the
device info, or found by the ThingLinks ``manufacturerId`` + ``model`` pair.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from webapp.devices import downlink
from webapp.devices.actions.commands import carrier, dispatch_pending
from webapp.devices.actions.devices import create_device, delete_device, record_connect_status
from webapp.devices.actions.shadow import send_deltas
from webapp.devices.choices import ConnectStatus, DeviceStatus, NodeType
from webapp.devices.models import Device
from webapp.products.models import (
    IDENTIFIER_RE,
    RESERVED_DEVICE_IDENTIFIERS,
    Product,
    reserved_identifier_problem,
)

MAX_ITEMS = 100
OK = {"statusCode": 0, "statusDesc": "successful"}
_IDENTIFIER = re.compile(IDENTIFIER_RE)


def _failed(reason: str) -> dict[str, Any]:
    return {"statusCode": 1, "statusDesc": reason}


def products_for(gateway: Device) -> QuerySet[Product]:
    """The products a gateway may give its sub-devices: those of its department and below
    (a sub-device joins the gateway's department), or, for a gateway without a department,
    the products without one. Another department's product stays out of reach: its data,
    rules and identifiers are not the gateway's to use."""
    department = gateway.department
    if department is None:
        return Product.objects.filter(department__isnull=True)
    if not department.path:
        return Product.objects.filter(department=department)
    return Product.objects.filter(department__path__startswith=department.path)


def _product_of(gateway: Device, info: dict[str, Any]) -> Product | str:
    """The sub-device's product, or why none was found (a product out of the gateway's reach
    is unknown to it, whether it exists or not)."""
    reachable = products_for(gateway)
    named = info.get("productIdentification") or info.get("productId")
    if isinstance(named, str) and named:
        product = reachable.filter(identifier=named).first()
        return product if product is not None else f"unknown product {named}"
    manufacturer, model = info.get("manufacturerId"), info.get("model")
    if isinstance(manufacturer, str) and isinstance(model, str) and manufacturer and model:
        matches = list(reachable.filter(manufacturer=manufacturer, model=model)[:2])
        if len(matches) == 1:
            return matches[0]
        if matches:
            return (f"several products have manufacturer {manufacturer} and model {model}; "
                    "give productIdentification")
        return f"no product has manufacturer {manufacturer} and model {model}"
    return "give productIdentification, or the manufacturerId and model of a product"


def _info(device: Device, node_id: str | None = None) -> dict[str, Any]:
    return {
        "deviceId": device.identifier,
        "nodeId": node_id or device.identifier,
        "name": device.name,
        "description": device.description,
        "manufacturerId": device.product.manufacturer,
        "model": device.product.model,
        "productIdentification": device.product.identifier,
    }


def _add(gateway: Device, body: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    for info in body.get("deviceInfos") or []:
        if not isinstance(info, dict):
            results.append(_failed("a deviceInfos entry must be an object"))
            continue
        node_id = info.get("nodeId")
        if not isinstance(node_id, str) or not _IDENTIFIER.match(node_id):
            results.append({**_failed("nodeId must be 1-64 letters, digits, '_', '.' or '-'"),
                            "deviceInfo": {"nodeId": node_id}})
            continue
        existing = Device.objects.select_related("product").filter(identifier=node_id).first()
        if existing is not None:
            if existing.gateway_id != gateway.pk:
                results.append({**_failed(f"device {node_id} exists and is not a sub-device "
                                          f"of {gateway.identifier}"),
                                "deviceInfo": {"nodeId": node_id}})
                continue
            results.append({**OK, "deviceInfo": _info(existing, node_id)})
            continue
        product = _product_of(gateway, info)
        if isinstance(product, str):
            results.append({**_failed(product), "deviceInfo": {"nodeId": node_id}})
            continue
        if product.product_type == "gateway":
            results.append({**_failed("a gateway product cannot be a sub-device"),
                            "deviceInfo": {"nodeId": node_id}})
            continue
        reserved = reserved_identifier_problem(node_id, RESERVED_DEVICE_IDENTIFIERS)
        if reserved:
            results.append({**_failed(reserved), "deviceInfo": {"nodeId": node_id}})
            continue
        device, _secret = create_device(
            acting_user=None, product=product, identifier=node_id,
            name=str(info.get("name") or "")[:100],
            description=str(info.get("description") or ""),
            gateway=gateway, status=DeviceStatus.ACTIVATED, department=gateway.department)
        results.append({**OK, "deviceInfo": _info(device, node_id)})
    return results


def _own_subs(gateway: Device, ids: list[Any]) -> dict[str, Device]:
    wanted = [i for i in ids if isinstance(i, str)]
    return {d.identifier: d for d in Device.objects.select_related("product").filter(
        identifier__in=wanted, gateway=gateway)}


def _delete(gateway: Device, body: dict[str, Any]) -> list[dict[str, Any]]:
    ids = body.get("deviceIds") or []
    subs = _own_subs(gateway, ids)
    results = []
    for identifier in ids:
        device = subs.get(identifier) if isinstance(identifier, str) else None
        if device is None:
            results.append({"deviceId": identifier,
                            **_failed(f"unknown sub-device {identifier} of {gateway.identifier}")})
            continue
        delete_device(device=device)
        results.append({"deviceId": identifier, **OK})
    return results


def _update(gateway: Device, body: dict[str, Any], ts: int) -> list[dict[str, Any]]:
    statuses = body.get("deviceStatuses") or []
    subs = _own_subs(gateway, [s.get("deviceId") for s in statuses if isinstance(s, dict)])
    results, online = [], []
    for item in statuses:
        identifier = item.get("deviceId") if isinstance(item, dict) else None
        status = str(item.get("status", "")).upper() if isinstance(item, dict) else ""
        if identifier not in subs:
            results.append({"deviceId": identifier,
                            **_failed(f"unknown sub-device {identifier} of {gateway.identifier}")})
            continue
        if status not in ("ONLINE", "OFFLINE"):
            results.append({"deviceId": identifier, **_failed("status is ONLINE or OFFLINE")})
            continue
        connect = ConnectStatus.ONLINE if status == "ONLINE" else ConnectStatus.OFFLINE
        record_connect_status(identifier, connect, ts)
        if connect == ConnectStatus.ONLINE:
            online.append(identifier)
        results.append({"deviceId": identifier, **OK})
    if online:
        transaction.on_commit(lambda: (dispatch_pending(online), send_deltas(online)))
    return results


def _query_info(device: Device) -> dict[str, Any]:
    return {
        "deviceId": device.identifier,
        "deviceName": device.name,
        "description": device.description,
        "deviceStatus": device.status.upper(),
        "connectStatus": device.connect_status.upper(),
        "deviceTags": device.tags,
        "productIdentification": device.product.identifier,
        "swVersion": device.sw_version,
        "fwVersion": device.fw_version,
        "deviceSdkVersion": "v1",
        "gatewayId": device.gateway.identifier if device.gateway is not None else "",
        "nodeType": device.node_type.upper(),
        "remark": device.description,
    }


def _query(gateway: Device, body: dict[str, Any]) -> list[dict[str, Any]]:
    ids = body.get("deviceIds")
    family = Device.objects.select_related("product", "gateway").filter(gateway=gateway)
    if not ids:
        return [{**OK, "deviceInfo": _query_info(d)} for d in family.order_by("identifier")]
    known = {d.identifier: d for d in family.filter(identifier__in=[
        i for i in ids if isinstance(i, str)])}
    if gateway.identifier in ids:
        known[gateway.identifier] = gateway
    return [{**OK, "deviceInfo": _query_info(known[i])} if i in known else
            {"deviceId": i, **_failed(f"unknown sub-device {i} of {gateway.identifier}")}
            for i in ids]


_LIST_KEYS = {"add": "deviceInfos", "delete": "deviceIds", "update": "deviceStatuses",
              "query": "deviceIds"}


def handle_request(device: Device, op: str, body: Any, ts: int,
                   mid: Any = None) -> dict[str, Any]:
    """Apply one topology request of ``device`` and answer it on ``…/topo/{op}Response``."""
    answer: dict[str, Any]
    key = _LIST_KEYS.get(op)
    items = body.get(key) if isinstance(body, dict) and key else None
    if key is None:
        answer = {**_failed(f"unknown topology operation {op}"), "data": []}
    elif device.node_type != NodeType.GATEWAY:
        answer = {**_failed(f"{device.identifier} is not a gateway; only a gateway manages "
                            "sub-devices"), "data": []}
    elif items is not None and not isinstance(items, list):
        answer = {**_failed(f'"{key}" must be a list'), "data": []}
    elif op != "query" and not items:
        answer = {**_failed(f'the body needs a non-empty "{key}" list'), "data": []}
    elif items is not None and len(items) > MAX_ITEMS:
        answer = {**_failed(f"at most {MAX_ITEMS} items per request"), "data": []}
    else:
        with transaction.atomic():
            if op == "add":
                data = _add(device, body)
            elif op == "delete":
                data = _delete(device, body)
            elif op == "update":
                data = _update(device, body, ts)
            else:
                data = _query(device, body)
        failed = [d for d in data if d.get("statusCode")]
        answer = {**(OK if not failed else _failed(
            f"{len(failed)} of {len(data)} failed; first: {failed[0]['statusDesc']}")),
            "data": data}
    downlink.send(device.identifier, f"topo/{op}Response", answer,
                  mid=mid if isinstance(mid, int) else None, via=carrier(device))
    return answer

