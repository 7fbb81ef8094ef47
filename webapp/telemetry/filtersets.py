import django_filters

from webapp.telemetry.models import DeviceMessage, RetentionPolicy


class DeviceMessageFilterSet(django_filters.FilterSet):
    start = django_filters.IsoDateTimeFilter(field_name="ts", lookup_expr="gte")
    end = django_filters.IsoDateTimeFilter(field_name="ts", lookup_expr="lt")

    class Meta:
        model = DeviceMessage
        fields = ("direction", "result", "topic")


class RetentionPolicyFilterSet(django_filters.FilterSet):
    product = django_filters.CharFilter(field_name="product__identifier")

    class Meta:
        model = RetentionPolicy
        fields = ("product",)
