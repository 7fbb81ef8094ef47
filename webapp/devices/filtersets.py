import django_filters
from django.db.models import Q

from webapp.devices.models import Device, DeviceCommand


class DeviceFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    product = django_filters.CharFilter(field_name="product__identifier")
    gateway = django_filters.CharFilter(field_name="gateway__identifier")

    class Meta:
        model = Device
        fields = ("product", "status", "connect_status", "node_type", "gateway", "department")

    def search(self, queryset, name, value):
        return queryset.filter(Q(identifier__icontains=value) | Q(name__icontains=value))


class DeviceCommandFilterSet(django_filters.FilterSet):
    device = django_filters.CharFilter(field_name="device__identifier")
    created_after = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="lt")

    class Meta:
        model = DeviceCommand
        fields = ("device", "status", "service", "command", "source")
