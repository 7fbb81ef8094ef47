import django_filters

from webapp.ota.models import OtaCampaign, OtaPackage, OtaTask


class OtaPackageFilterSet(django_filters.FilterSet):
    product = django_filters.CharFilter(field_name="product__identifier")

    class Meta:
        model = OtaPackage
        fields = ("product", "package_type", "version")


class OtaCampaignFilterSet(django_filters.FilterSet):
    product = django_filters.CharFilter(field_name="package__product__identifier")

    class Meta:
        model = OtaCampaign
        fields = ("status", "package", "target_type", "product")


class OtaTaskFilterSet(django_filters.FilterSet):
    device = django_filters.CharFilter(field_name="device__identifier")

    class Meta:
        model = OtaTask
        fields = ("status", "device")
