import django_filters

from webapp.access.models import AclRule, DeviceKeys, ProductRegistration


class AclRuleFilterSet(django_filters.FilterSet):
    product = django_filters.CharFilter(field_name="product__identifier")
    device = django_filters.CharFilter(field_name="device__identifier")
    product_wide = django_filters.BooleanFilter(field_name="device", lookup_expr="isnull",
                                                label="product-wide")

    class Meta:
        model = AclRule
        fields = ("product", "device", "product_wide", "action", "decision", "enabled")


class ProductRegistrationFilterSet(django_filters.FilterSet):
    product = django_filters.CharFilter(field_name="product__identifier")

    class Meta:
        model = ProductRegistration
        fields = ("product", "enabled")


class DeviceKeysFilterSet(django_filters.FilterSet):
    device = django_filters.CharFilter(field_name="device__identifier")
    product = django_filters.CharFilter(field_name="device__product__identifier")

    class Meta:
        model = DeviceKeys
        fields = ("device", "product")
