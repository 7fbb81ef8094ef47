"""The ThingLinks product JSON (docs/devices.md, "Products") to and from our API form.

ThingLinks writes camelCase keys and numbers as strings: ``{"productName", "productType": 1,
"manufacturerId", "model", "dataFormat": "JSON", "protocolType": "MQTT", "services":
[{"serviceCode", "serviceName", "properties": [{"propertyCode", "datatype", "min": "0",
"max": "100", "method": "RE", "required": "1", ...}], "commands": [{"commandCode", "requests":
[{"parameterCode", ...}], "responses": [...]}]}]}``. The legacy form (``serviceId``, properties
with ``name``) is read too. A ThingLinks export imports unchanged; our export in this form
re-imports to the same model (events travel in an ``events`` list ThingLinks does not have,
a binary codec and its sample frames in ``codec`` and ``codecSamples``).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from webapp.products.models import IDENTIFIER_RE, Product

# ThingLinks datatype names → ours (lower-cased keys).
_DATATYPES = {
    "int": "int", "integer": "int", "bigint": "bigint", "long": "bigint", "decimal": "decimal",
    "float": "decimal", "double": "decimal", "string": "string", "varchar": "string",
    "text": "string", "bool": "bool", "boolean": "bool", "datetime": "datetime",
    "timestamp": "datetime", "date": "datetime", "jsonobject": "json", "json": "json",
    "varbinary": "binary", "binary": "binary", "enum": "enum",
}
# Ours → the ThingLinks name on export.
_EXPORT_DATATYPES = {"datetime": "DateTime", "json": "jsonObject", "binary": "varBinary"}
_PRODUCT_TYPES = {"1": "common", "common": "common", "2": "gateway", "gateway": "gateway",
                  "0": "common", "unknown": "common"}
_PROTOCOLS = {"mqtt": "mqtt", "websocket": "websocket", "coap": "coap", "http": "http",
              "tcp": "tcp", "udp": "udp"}


class ThingLinksFormatError(ValueError):
    """The JSON looks like ThingLinks but a value cannot be read; `path` says where."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def is_thinglinks(data: Any) -> bool:
    """Whether a product JSON is in the ThingLinks form (camelCase) rather than ours."""
    if not isinstance(data, dict):
        return False
    if any(key in data for key in ("productName", "productType", "protocolType",
                                   "manufacturerId", "productIdentification")):
        return True
    services = data.get("services")
    if isinstance(services, list) and services and isinstance(services[0], dict):
        return any(key in services[0] for key in ("serviceCode", "serviceId", "serviceName"))
    return False


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _number(value: Any, path: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ThingLinksFormatError(path, f"{value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ThingLinksFormatError(path, f"{value!r} is not a number") from None


def _integer(value: Any, path: str) -> int | None:
    number = _number(value, path)
    if number is None:
        return None
    if not number.is_integer() or number < 1:
        raise ThingLinksFormatError(path, f"{value!r} is not a positive integer")
    return int(number)


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "y")


def _enum_values(value: Any, path: str) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                raise ThingLinksFormatError(path, "enumlist is not a JSON list") from None
            if isinstance(parsed, list):
                return parsed
        return [part.strip() for part in text.split(",") if part.strip()]
    raise ThingLinksFormatError(path, "enumlist must be a list")


def _field(item: dict[str, Any], path: str, code_keys: tuple[str, ...],
           name_keys: tuple[str, ...]) -> dict[str, Any]:
    code = next((item[k] for k in code_keys if item.get(k)), None)
    if not isinstance(code, str):
        raise ThingLinksFormatError(path, f"needs {code_keys[0]}")
    raw_type = _text(item.get("datatype")).strip().lower()
    if raw_type not in _DATATYPES:
        raise ThingLinksFormatError(f"{path}.datatype", f"unknown datatype {raw_type!r}")
    field: dict[str, Any] = {
        "code": code,
        "name": _text(next((item[k] for k in name_keys if item.get(k)), ""))[:100],
        "datatype": _DATATYPES[raw_type],
        "unit": _text(item.get("unit"))[:20],
        "min": _number(item.get("min"), f"{path}.min"),
        "max": _number(item.get("max"), f"{path}.max"),
        "step": _number(item.get("step"), f"{path}.step"),
        "max_length": _integer(item.get("maxlength", item.get("maxLength")),
                               f"{path}.maxlength"),
        "enum_values": _enum_values(item.get("enumlist", item.get("enumList")),
                                    f"{path}.enumlist"),
        "required": _flag(item.get("required")),
        "description": _text(item.get("description", item.get("parameterDescription"))),
    }
    return field


def _property(item: dict[str, Any], path: str) -> dict[str, Any]:
    field = _field(item, path, ("propertyCode", "name"), ("propertyName", "name"))
    method = _text(item.get("method") or "RE").strip().upper()
    if method not in ("R", "RW", "RE", "RWE"):
        raise ThingLinksFormatError(f"{path}.method", f"unknown access mode {method!r}")
    field["access"] = method
    return field


def _parameters(items: Any, path: str) -> list[dict[str, Any]]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise ThingLinksFormatError(path, "must be a list")
    return [_field(p, f"{path}[{i}]", ("parameterCode", "code", "name"),
                   ("parameterName", "name")) for i, p in enumerate(items)]


def _identifier(data: dict[str, Any], given: str | None) -> str:
    if given:
        return given
    for key in ("productIdentification", "identifier"):
        value = data.get(key)
        if isinstance(value, str) and re.match(IDENTIFIER_RE, value):
            return value
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", _text(data.get("model") or data.get("productName")))
    slug = slug.strip("-._")[:64]
    return slug if slug and re.match(IDENTIFIER_RE, slug) else f"p-{uuid.uuid4().hex[:12]}"


def from_thinglinks(data: dict[str, Any], identifier: str | None = None) -> dict[str, Any]:
    """Our API form (as `POST /api/v1/products/` takes) of a ThingLinks product JSON."""
    product_type = _PRODUCT_TYPES.get(_text(data.get("productType") or "1").strip().lower())
    if product_type is None:
        raise ThingLinksFormatError("productType", f"unknown product type "
                                                   f"{data.get('productType')!r}")
    protocol = _PROTOCOLS.get(_text(data.get("protocolType") or "MQTT").strip().lower())
    if protocol is None:
        raise ThingLinksFormatError("protocolType", f"unknown protocol "
                                                    f"{data.get('protocolType')!r}")
    data_format = _text(data.get("dataFormat") or "JSON").strip().lower()
    if data_format not in ("json", "binary"):
        raise ThingLinksFormatError("dataFormat", f"unknown data format {data_format!r}")
    services = data.get("services") or []
    if not isinstance(services, list):
        raise ThingLinksFormatError("services", "must be a list")
    out_services = []
    for i, svc in enumerate(services):
        path = f"services[{i}]"
        if not isinstance(svc, dict):
            raise ThingLinksFormatError(path, "must be an object")
        code = svc.get("serviceCode") or svc.get("serviceId")
        if not isinstance(code, str) or not code:
            raise ThingLinksFormatError(path, "needs serviceCode")
        properties = svc.get("properties") or []
        commands = svc.get("commands") or []
        events = svc.get("events") or []
        for key, value in (("properties", properties), ("commands", commands),
                           ("events", events)):
            if not isinstance(value, list):
                raise ThingLinksFormatError(f"{path}.{key}", "must be a list")
        out_services.append({
            "code": code,
            "name": _text(svc.get("serviceName") or svc.get("serviceId") or "")[:100],
            "description": _text(svc.get("description")),
            "properties": [_property(p, f"{path}.properties[{j}]")
                           for j, p in enumerate(properties)],
            "commands": [{
                "code": c.get("commandCode") or c.get("name") or c.get("code"),
                "name": _text(c.get("commandName") or c.get("name") or "")[:100],
                "description": _text(c.get("description")),
                "requests": _parameters(c.get("requests"), f"{path}.commands[{j}].requests"),
                "responses": _parameters(c.get("responses"), f"{path}.commands[{j}].responses"),
            } for j, c in enumerate(commands)],
            "events": [{
                "code": e.get("eventCode") or e.get("code"),
                "name": _text(e.get("eventName") or e.get("name") or "")[:100],
                "description": _text(e.get("description")),
                "params": _parameters(e.get("params"), f"{path}.events[{j}].params"),
            } for j, e in enumerate(events)],
        })
    codec = data.get("codec") or None
    samples = data.get("codecSamples") or []
    return {
        **({"codec": codec, "codec_samples": samples} if codec is not None else {}),
        "identifier": _identifier(data, identifier),
        "name": _text(data.get("productName") or data.get("name") or "")[:100] or "Product",
        "product_type": product_type,
        "protocol": protocol,
        "data_format": data_format,
        "manufacturer": _text(data.get("manufacturerId") or data.get("manufacturerName"))[:100],
        "model": _text(data.get("model"))[:100],
        "device_type": _text(data.get("deviceType") or "default")[:50],
        "description": _text(data.get("remark") or data.get("description")),
        "services": out_services,
    }


def _string_number(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _export_field(field: dict[str, Any], prefix: str) -> dict[str, Any]:
    out = {
        f"{prefix}Code": field["code"],
        f"{prefix}Name": field.get("name") or "",
        "datatype": _EXPORT_DATATYPES.get(field["datatype"], field["datatype"]),
        "unit": field.get("unit") or "",
        "min": _string_number(field.get("min")),
        "max": _string_number(field.get("max")),
        "step": _string_number(field.get("step")),
        "maxlength": str(field["max_length"]) if field.get("max_length") else None,
        "required": "1" if field.get("required") else "0",
        "enumlist": json.dumps(field["enum_values"], ensure_ascii=False)
        if field.get("enum_values") else None,
        "description": field.get("description") or "",
    }
    return out


def to_thinglinks(product: Product, services: list[dict[str, Any]]) -> dict[str, Any]:
    """The ThingLinks product JSON of a product (`services` in our API form)."""
    codec = {"codec": product.codec, "codecSamples": product.codec_samples} \
        if product.codec else {}
    return {
        **codec,
        "productIdentification": product.identifier,
        "productName": product.name,
        "productType": 2 if product.product_type == "gateway" else 1,
        "manufacturerId": product.manufacturer,
        "manufacturerName": product.manufacturer,
        "model": product.model,
        "dataFormat": product.data_format.upper(),
        "deviceType": product.device_type or "default",
        "protocolType": product.protocol.upper(),
        "remark": product.description,
        "status": "0" if product.status == "enabled" else "1",
        "services": [{
            "serviceCode": svc["code"],
            "serviceName": svc.get("name") or "",
            "serviceType": "",
            "description": svc.get("description") or "",
            "properties": [{**_export_field(p, "property"), "method": p.get("access") or "RE"}
                           for p in svc.get("properties") or []],
            "commands": [{
                "commandCode": c["code"], "commandName": c.get("name") or "",
                "description": c.get("description") or "",
                "requests": [_export_field(p, "parameter") for p in c.get("requests") or []],
                "responses": [_export_field(p, "parameter") for p in c.get("responses") or []],
            } for c in svc.get("commands") or []],
            "events": [{
                "eventCode": e["code"], "eventName": e.get("name") or "",
                "description": e.get("description") or "",
                "params": [_export_field(p, "parameter") for p in e.get("params") or []],
            } for e in svc.get("events") or []],
        } for svc in services],
    }
