import re

import django_filters
from django.db.models import Q

from webapp.devices.models import Device, DeviceCommand, DeviceGroup

# A tag key becomes a JSON key lookup; `__` would start another lookup, so keys are plain.
TAG_KEY = re.compile(r"^[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*$")


class DeviceFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    product = django_filters.CharFilter(field_name="product__identifier")
    gateway = django_filters.CharFilter(field_name="gateway__identifier")
    group = django_filters.CharFilter(method="in_group", label="Group (id or name)")
    tag = django_filters.CharFilter(method="tagged", label="Tag (key or key:value)")

    class Meta:
        model = Device
        fields = ("product", "status", "connect_status", "node_type", "gateway", "department",
                  "group", "tag")

    def search(self, queryset, name, value):
        return queryset.filter(Q(identifier__icontains=value) | Q(name__icontains=value))

    def in_group(self, queryset, name, value):
        # ASCII digits only ("²".isdigit() is true but int() refuses it), and no more than
        # the database's integer holds
        if value.isascii() and value.isdigit():
            return queryset.filter(groups__pk=int(value)) if len(value) <= 18 \
                else queryset.none()
        return queryset.filter(groups__name=value)

    def tagged(self, queryset, name, value):
        key, sep, wanted = value.partition(":")
        if not TAG_KEY.match(key):
            return queryset.none()
        if not sep:
            return queryset.filter(tags__has_key=key)
        return queryset.filter(**{f"tags__{key}": wanted})


class DeviceCommandFilterSet(django_filters.FilterSet):
    device = django_filters.CharFilter(field_name="device__identifier")
    created_after = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="lt")

    class Meta:
        model = DeviceCommand
        fields = ("device", "status", "service", "command", "source")


class DeviceGroupFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains", label="Search")

    class Meta:
        model = DeviceGroup
        fields = ("department",)
