from __future__ import annotations

import base64
import json
from typing import Any

from django.db.models import Count
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from edge.frames import FrameError
from webapp.core import uploads
from webapp.core.errors import DomainError
from webapp.core.parsers import JSONParser
from webapp.products import actions, codecs
from webapp.products.filtersets import ProductFilterSet
from webapp.products.models import Product, ProductTemplate
from webapp.products.serializers import (
    CodecDecodeSerializer,
    CodecEncodeSerializer,
    ProductImportSerializer,
    ProductSerializer,
    ProductTemplateSerializer,
    SaveAsTemplateSerializer,
)
from webapp.products.thinglinks import to_thinglinks
from webapp.products.thingmodel import export_services, thing_model
from webapp.products.visibility import visible_templates
from webapp.system.viewsets import ScopedModelViewSet


class ProductViewSet(ScopedModelViewSet):
    """Products and their thing models (services with properties, commands and events)."""

    serializer_class = ProductSerializer
    filterset_class = ProductFilterSet
    lookup_field = "identifier"
    lookup_value_regex = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
    action_permissions = {
        "thing_model": ["products.view_product"],
        "import_product": ["products.add_product"],
        "save_as_template": ["products.view_product", "products.add_producttemplate"],
        "codec_decode": ["products.view_product"],
        "codec_encode": ["products.view_product"],
    }

    def get_queryset(self):
        return Product.objects.annotate(device_count=Count("devices")).order_by(
            "identifier").prefetch_related("services__properties",
                                           "services__commands__parameters",
                                           "services__events__parameters")

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = actions.create_product(
            acting_user=self.request.user, data=dict(serializer.validated_data))

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.update_product(
            product=serializer.instance,
            data=dict(serializer.validated_data), migrate=_flag(self.request, "migrate"))

    def perform_destroy(self, instance: Product) -> None:
        actions.delete_product(product=instance)

    @extend_schema(parameters=[OpenApiParameter(
        "dialect", str, enum=["thinglinks"],
        description="`thinglinks`: the ThingLinks product JSON (camelCase, numbers as text)")],
        responses=ProductSerializer)
    @action(detail=True, methods=["get"], url_path="thing-model")
    def thing_model(self, request: Request, identifier: str | None = None) -> Response:
        """Export the product and its thing model in the form `POST /api/v1/products/` and
        `POST /api/v1/products/import/` accept, or as ThingLinks product JSON."""
        product = self.get_object()
        services = export_services(product)
        if request.query_params.get("dialect") == "thinglinks":
            return Response(to_thinglinks(product, services))
        body: dict[str, Any] = {
            "identifier": product.identifier, "name": product.name,
            "product_type": product.product_type, "protocol": product.protocol,
            "data_format": product.data_format, "manufacturer": product.manufacturer,
            "model": product.model, "device_type": product.device_type,
            "description": product.description, "status": product.status,
            "services": services, "codec": product.codec,
            "codec_samples": product.codec_samples,
        }
        return Response(body, status=status.HTTP_200_OK)

    @extend_schema(request={"application/json": OpenApiTypes.OBJECT,
                            "multipart/form-data": ProductImportSerializer},
                   parameters=[ProductImportSerializer], responses={201: ProductSerializer})
    @action(detail=False, methods=["post"], url_path="import",
            parser_classes=[JSONParser, MultiPartParser, FormParser])
    def import_product(self, request: Request) -> Response:
        """Create a product from a product JSON: ours (`GET …/thing-model/`) or the ThingLinks
        one, as the body or a `.json` file. `update=true` replaces an existing product's model
        (`migrate=true` also when stored data depends on what changes). A file over
        `IMPORT_MAX_BYTES`, or a body over `DATA_UPLOAD_MAX_MEMORY_SIZE`, is refused (413)."""
        if request.content_type.startswith("multipart/"):
            uploads.check_request_size(request, uploads.max_import_bytes(), "IMPORT_MAX_BYTES")
        options = ProductImportSerializer(data={**request.query_params.dict(),
                                                **_form_fields(request)})
        options.is_valid(raise_exception=True)
        upload = options.validated_data.get("file")
        if upload is not None:
            uploads.check_size(upload.size, uploads.max_import_bytes(), "IMPORT_MAX_BYTES")
            try:
                payload = json.loads(upload.read().decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise DomainError(_("the file is not JSON: {error}").format(error=exc),
                                  code="invalid_import") from None
        else:
            payload = request.data
        if options.validated_data["update"] and not request.user.has_perm(
                "products.change_product"):
            raise PermissionDenied()
        product, created = actions.import_product(
            acting_user=request.user, payload=payload,
            identifier=options.validated_data.get("identifier"),
            update=options.validated_data["update"], migrate=options.validated_data["migrate"])
        return Response(ProductSerializer(product).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=SaveAsTemplateSerializer, responses={201: ProductTemplateSerializer})
    @action(detail=True, methods=["post"], url_path="save-as-template")
    def save_as_template(self, request: Request, identifier: str | None = None) -> Response:
        """Keep this product's thing model as a template for new products."""
        product = self.get_object()
        body = SaveAsTemplateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        template = actions.save_as_template(acting_user=request.user, product=product,
                                            **body.validated_data)
        return Response(ProductTemplateSerializer(template).data,
                        status=status.HTTP_201_CREATED)


    @extend_schema(request=CodecDecodeSerializer, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], url_path="codec/decode")
    def codec_decode(self, request: Request, identifier: str | None = None) -> Response:
        """Decode frames with the product's codec: each frame's message, its values, the
        MQTT message it stands for (`topic` suffix and `body`) and what the thing model says
        of each value. Bytes that are not frames of the codec get 400 with the reason."""
        product = self.get_object()
        body = CodecDecodeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        options = body.validated_data
        codec = _codec(product)
        try:
            data = codecs.frame_bytes(options.get("hex"), options.get("base64"))
            messages = codecs.decode(codec, thing_model(product), data,
                                     secret=options.get("secret"), device=options.get("device"))
        except FrameError as exc:
            raise _frame_refused(exc) from None
        return Response({"codec_version": product.codec_version, "messages": messages})

    @extend_schema(request=CodecEncodeSerializer, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], url_path="codec/encode")
    def codec_encode(self, request: Request, identifier: str | None = None) -> Response:
        """The frame the product's codec makes of a command (its parameters checked against
        the thing model first), as hex and base64."""
        product = self.get_object()
        body = CodecEncodeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        options = body.validated_data
        codec = _codec(product)
        try:
            frame = codecs.encode(codec, thing_model(product), options["service"],
                                  options["command"], options["params"], mid=options["mid"],
                                  device=options.get("device"), secret=options.get("secret"))
        except FrameError as exc:
            raise _frame_refused(exc) from None
        return Response({"hex": frame.hex(), "base64": base64.b64encode(frame).decode(),
                         "length": len(frame), "codec_version": product.codec_version})


def _codec(product: Product) -> Any:
    if not product.codec:
        raise DomainError(_("the product has no codec"), code="no_codec")
    try:
        return codecs.load(product.codec)
    except codecs.CodecInvalid as exc:  # stored before a stricter engine: say so
        raise DomainError(exc.reason, code="invalid_codec") from None


def _frame_refused(exc: FrameError) -> DomainError:
    return DomainError(exc.reason, code="bad_frame", extra={"frame_error": exc.code})


def _flag(request: Request, name: str) -> bool:
    return str(request.query_params.get(name, "")).lower() in ("1", "true", "yes")


def _form_fields(request: Request) -> dict[str, Any]:
    """The import options sent as form fields next to a file (not the product JSON body)."""
    data: Any = request.data
    if request.content_type and request.content_type.startswith("multipart/"):
        return dict(data.items())
    return {}


class ProductTemplateViewSet(viewsets.ModelViewSet):
    """Product templates: ready-made thing models to start a product from."""

    serializer_class = ProductTemplateSerializer
    lookup_field = "identifier"
    lookup_value_regex = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
    filterset_fields = ("product_type", "status")

    def get_queryset(self):
        """Shared templates and those of the departments in the caller's data scope."""
        return visible_templates(ProductTemplate.objects.all(),
                                         self.request.user).order_by("name")

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = actions.create_template(acting_user=self.request.user,
                                                      data=dict(serializer.validated_data))

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.update_template(
            acting_user=self.request.user, template=serializer.instance,
            data=dict(serializer.validated_data))

    def perform_destroy(self, instance: ProductTemplate) -> None:
        actions.delete_template(acting_user=self.request.user, template=instance)


# (prefix, viewset, basename) for the API router (config/api.py).
ROUTES = [
    ("products", ProductViewSet, "product"),
    ("product-templates", ProductTemplateViewSet, "product-template"),
]
