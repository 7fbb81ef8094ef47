import django_filters

from webapp.products.models import Product


class ProductFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")

    class Meta:
        model = Product
        fields = ("product_type", "protocol", "status", "department", "manufacturer")

    def search(self, queryset, name, value):
        from django.db.models import Q

        return queryset.filter(Q(identifier__icontains=value) | Q(name__icontains=value))
