from django.db import models
from django.utils.translation import gettext_lazy as _


class ProductType(models.TextChoices):
    COMMON = "common", _("Common device")
    GATEWAY = "gateway", _("Gateway")


class Protocol(models.TextChoices):
    MQTT = "mqtt", "MQTT"
    WEBSOCKET = "websocket", "WebSocket"
    COAP = "coap", "CoAP"
    HTTP = "http", "HTTP"
    TCP = "tcp", "TCP"
    UDP = "udp", "UDP"


class DataFormat(models.TextChoices):
    JSON = "json", "JSON"
    BINARY = "binary", _("Binary")


class ProductStatus(models.TextChoices):
    ENABLED = "enabled", _("Enabled")
    DISABLED = "disabled", _("Disabled")


class Datatype(models.TextChoices):
    INT = "int", _("Integer (32 bit)")
    BIGINT = "bigint", _("Integer (64 bit)")
    DECIMAL = "decimal", _("Decimal")
    STRING = "string", _("String")
    BOOL = "bool", _("Boolean")
    DATETIME = "datetime", _("Date and time")
    JSON = "json", _("JSON")
    BINARY = "binary", _("Binary")
    ENUM = "enum", _("Enumeration")


class AccessMode(models.TextChoices):
    R = "R", _("Read")
    RW = "RW", _("Read and write")
    RE = "RE", _("Read, reported on change")
    RWE = "RWE", _("Read, write, reported on change")


class ParameterDirection(models.TextChoices):
    REQUEST = "request", _("Request")
    RESPONSE = "response", _("Response")
