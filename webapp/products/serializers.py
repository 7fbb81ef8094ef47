"""The API form of products and thing models (docs/api.md, docs/devices.md)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import serializers

from webapp.products import codecs
from webapp.products.choices import AccessMode, Datatype, ProductStatus
from webapp.products.models import CODE_RE, IDENTIFIER_RE, Product, ProductTemplate
from webapp.products.thingmodel import export_services
from webapp.products.visibility import visible_templates

RESERVED_PROPERTY_CODES = frozenset({"device", "ts", "received"})


class TypedFieldSerializer(serializers.Serializer):
    code = serializers.RegexField(CODE_RE, max_length=50)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    datatype = serializers.ChoiceField(choices=Datatype.choices)
    unit = serializers.CharField(max_length=20, required=False, allow_blank=True, default="")
    min = serializers.FloatField(required=False, allow_null=True, default=None)
    max = serializers.FloatField(required=False, allow_null=True, default=None)
    step = serializers.FloatField(required=False, allow_null=True, default=None)
    max_length = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                          max_value=65535, default=None)
    enum_values = serializers.ListField(required=False, default=list)
    required = serializers.BooleanField(required=False, default=False)  # type: ignore[assignment]
    description = serializers.CharField(required=False, allow_blank=True, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("min") is not None and attrs.get("max") is not None \
                and attrs["min"] > attrs["max"]:
            raise serializers.ValidationError({"min": _("min is greater than max")})
        if attrs.get("datatype") == Datatype.ENUM:
            values = attrs.get("enum_values") or []
            if not values:
                raise serializers.ValidationError({"enum_values": _("an enum needs its values")})
            problem = _enum_problem(values)
            if problem:
                raise serializers.ValidationError({"enum_values": problem})
        return attrs


MAX_ENUM_VALUES = 1000


def _enum_problem(values: list[Any]) -> str:
    """Why an enum's values cannot be used (empty, repeated, not a text or number), or ""."""
    if len(values) > MAX_ENUM_VALUES:
        return _("at most {count} enum values").format(count=MAX_ENUM_VALUES)
    seen: set[str] = set()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return _("enum values are texts or numbers")
        text = str(value).strip()
        if not text:
            return _("an enum value is empty")
        if text in seen:
            return _("the enum value {value} is repeated").format(value=text)
        seen.add(text)
    return ""


class PropertySerializer(TypedFieldSerializer):
    access = serializers.ChoiceField(choices=AccessMode.choices, required=False,
                                     default=AccessMode.RE)

    def validate_code(self, value: str) -> str:
        if value.lower() in RESERVED_PROPERTY_CODES:
            raise serializers.ValidationError(_("{code} is a reserved name").format(code=value))
        return value


class CommandSerializer(serializers.Serializer):
    code = serializers.RegexField(CODE_RE, max_length=50)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    requests = TypedFieldSerializer(many=True, required=False, default=list)
    responses = TypedFieldSerializer(many=True, required=False, default=list)


class EventSerializer(serializers.Serializer):
    code = serializers.RegexField(CODE_RE, max_length=50)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    params = TypedFieldSerializer(many=True, required=False, default=list)


def _unique_codes(items: list[dict[str, Any]], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        folded = item["code"].lower()
        if folded in seen:
            raise serializers.ValidationError(
                _("duplicate {what} code {code!r} (codes are case-insensitive)").format(
                    what=what, code=item["code"]))
        seen.add(folded)


class ServiceSerializer(serializers.Serializer):
    code = serializers.RegexField(CODE_RE, max_length=50)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    properties = PropertySerializer(many=True, required=False, default=list)
    commands = CommandSerializer(many=True, required=False, default=list)
    events = EventSerializer(many=True, required=False, default=list)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        _unique_codes(attrs.get("properties", []), "property")
        _unique_codes(attrs.get("commands", []), "command")
        _unique_codes(attrs.get("events", []), "event")
        return attrs


class ProductSerializer(serializers.ModelSerializer):
    services = ServiceSerializer(many=True, required=False, write_only=True)
    device_count = serializers.IntegerField(read_only=True, required=False)
    template = serializers.SlugRelatedField(
        slug_field="identifier", write_only=True, required=False,
        queryset=ProductTemplate.objects.filter(status=ProductStatus.ENABLED), help_text=_(
            "Start from a template: its type, protocol, data format and thing model fill "
            "what the request does not give."))

    class Meta:
        model = Product
        fields = ("id", "identifier", "name", "product_type", "protocol", "data_format",
                  "manufacturer", "model", "device_type", "description", "status",
                  "department", "template", "services", "codec", "codec_samples",
                  "codec_version", "device_count", "created", "updated")
        read_only_fields = ("id", "codec_version", "created", "updated")

    def validate_template(self, value: ProductTemplate) -> ProductTemplate:
        if self.instance is not None:
            raise serializers.ValidationError(_("a template is for new products only"))
        request = self.context.get("request")
        if (request is not None and value.department_id is not None
                and not visible_templates(ProductTemplate.objects.filter(pk=value.pk),
                                          request.user).exists()):
            raise serializers.ValidationError(_("There is no template {identifier!r}.")
                                              .format(identifier=value.identifier))
        return value

    def validate_services(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.partial:
            # A PATCH validates nested fields partially (no required fields, no defaults);
            # the model it sends replaces the whole model, so it is checked in full.
            full = ServiceSerializer(data=self.initial_data.get("services"), many=True)
            if not full.is_valid():
                raise serializers.ValidationError(full.errors)
            value = full.validated_data
        _unique_codes(value, "service")
        return value

    def validate_identifier(self, value: str) -> str:
        if self.instance is not None and value != self.instance.identifier:
            raise serializers.ValidationError(_("the identifier of a product cannot change"))
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The codec, its samples and the protocol as they will be after the write (what
        the request does not give: the product's, else the template's) must fit."""
        check_codec_fields(attrs, self.instance or attrs.get("template"))
        return attrs

    def to_representation(self, instance: Product) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["services"] = export_services(instance)
        return data


def check_codec_fields(attrs: dict[str, Any], current: Any) -> None:
    """Refuse a codec that is invalid or does not fit the protocol, as a field error with the
    codec's reason (``current``: the product or template the values not in ``attrs`` come
    from)."""
    def value(key: str, default: Any) -> Any:
        if key in attrs:
            return attrs[key]
        return getattr(current, key) if current is not None else default

    try:
        codecs.check(value("protocol", "mqtt"), value("codec", None),
                     value("codec_samples", []))
    except codecs.CodecInvalid as exc:
        raise serializers.ValidationError({exc.field: [exc.reason]}) from None


class ProductTemplateSerializer(serializers.ModelSerializer):
    services = ServiceSerializer(many=True, required=False, default=list)

    class Meta:
        model = ProductTemplate
        fields = ("id", "identifier", "name", "description", "product_type", "protocol",
                  "data_format", "services", "codec", "codec_samples", "status", "built_in",
                  "department", "created")
        read_only_fields = ("id", "built_in", "created")

    def validate_services(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        _unique_codes(value, "service")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        check_codec_fields(attrs, self.instance)
        return attrs

    def to_representation(self, instance: ProductTemplate) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["services"] = instance.services
        return data


class SaveAsTemplateSerializer(serializers.Serializer):
    identifier = serializers.RegexField(IDENTIFIER_RE, max_length=64)
    name = serializers.CharField(max_length=100)


class ProductImportSerializer(serializers.Serializer):
    """Options of `POST /api/v1/products/import/` (query parameters, or form fields with a
    file)."""

    file = serializers.FileField(required=False, help_text=_(
        "A .json file; or send the product JSON as the request body."))
    identifier = serializers.RegexField(IDENTIFIER_RE, max_length=64, required=False,
                                        help_text=_("The product identifier to use (a "
                                                    "ThingLinks JSON may not carry one)."))
    update = serializers.BooleanField(  # type: ignore[assignment]
        required=False, default=False, help_text=_(
        "Replace the model of an existing product instead of refusing the duplicate."))
    migrate = serializers.BooleanField(required=False, default=False, help_text=_(
        "Allow removing or retyping properties that have stored data (it is dropped)."))


class CodecDecodeSerializer(serializers.Serializer):
    """`POST /api/v1/products/{id}/codec/decode/`: one frame (a datagram) or a stream of
    frames, as hex or base64."""

    hex = serializers.CharField(required=False, max_length=3 * codecs.MAX_INPUT_BYTES,
                                trim_whitespace=True)
    base64 = serializers.CharField(required=False, max_length=2 * codecs.MAX_INPUT_BYTES)
    secret = serializers.CharField(required=False, max_length=256, help_text=_(
        "The device secret a MAC is keyed with (codecs with MAC authentication)."))
    device = serializers.RegexField(IDENTIFIER_RE, max_length=64, required=False, help_text=_(
        "The device a connection logged in as (for frames that do not name theirs)."))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("hex") and not attrs.get("base64"):
            raise serializers.ValidationError(_("give the frame as hex or base64"))
        return attrs


class CodecEncodeSerializer(serializers.Serializer):
    """`POST /api/v1/products/{id}/codec/encode/`: a command to its frame."""

    service = serializers.RegexField(CODE_RE, max_length=50)
    command = serializers.RegexField(CODE_RE, max_length=50)
    params = serializers.DictField(required=False, default=dict)
    mid = serializers.IntegerField(required=False, default=1, min_value=0,
                                   max_value=2**32 - 1, help_text=_("The command id."))
    device = serializers.RegexField(IDENTIFIER_RE, max_length=64, required=False)
    secret = serializers.CharField(required=False, max_length=256)
