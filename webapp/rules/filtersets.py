from typing import Any

import django_filters
from django.db.models import Q

from webapp.rules.choices import OPEN_ALARM_STATUSES
from webapp.rules.models import (
    Alarm,
    DeadLetter,
    Notification,
    NotificationChannel,
    Rule,
    RuleTrace,
    Sink,
)
from webapp.system import scope


def in_scope(model: Any) -> Any:
    """The choices of a filter on a related record: those in the caller's data scope (a
    filter on another department's record is refused like one on a record that does not
    exist, rather than telling that it exists)."""
    def queryset(request: Any) -> Any:
        return scope.restrict(model._default_manager.all(), getattr(request, "user", None))
    return queryset


class RuleFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    product = django_filters.CharFilter(field_name="product__identifier")

    class Meta:
        model = Rule
        fields = ("product", "enabled", "trigger_type", "fire_mode")

    def search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(description__icontains=value))


class RuleTraceFilterSet(django_filters.FilterSet):
    start = django_filters.IsoDateTimeFilter(field_name="ts", lookup_expr="gte")
    end = django_filters.IsoDateTimeFilter(field_name="ts", lookup_expr="lt")

    class Meta:
        model = RuleTrace
        fields = ("rule", "kind", "device", "ok")


class AlarmFilterSet(django_filters.FilterSet):
    device = django_filters.CharFilter(field_name="device__identifier")
    product = django_filters.CharFilter(field_name="product__identifier")
    status = django_filters.CharFilter(method="filter_status", help_text=(
        "active, acknowledged, cleared, or open (active or acknowledged); comma-separated"))
    severity = django_filters.CharFilter(method="filter_in")
    start = django_filters.IsoDateTimeFilter(field_name="last_seen", lookup_expr="gte")
    end = django_filters.IsoDateTimeFilter(field_name="first_seen", lookup_expr="lt")
    q = django_filters.CharFilter(method="search", label="Search")

    class Meta:
        model = Alarm
        fields = ("device", "product", "rule", "status", "severity", "assignee")

    def filter_status(self, queryset, name, value):
        wanted: set[str] = set()
        for item in value.split(","):
            wanted.update(OPEN_ALARM_STATUSES if item == "open" else [item])
        return queryset.filter(status__in=wanted)

    def filter_in(self, queryset, name, value):
        return queryset.filter(**{f"{name}__in": value.split(",")})

    def search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(message__icontains=value))


class NotificationChannelFilterSet(django_filters.FilterSet):
    class Meta:
        model = NotificationChannel
        fields = ("channel_type", "enabled")


class NotificationFilterSet(django_filters.FilterSet):
    mine = django_filters.BooleanFilter(method="filter_mine", label="Mine (in-site)")
    channel = django_filters.ModelChoiceFilter(queryset=in_scope(NotificationChannel))
    rule = django_filters.ModelChoiceFilter(queryset=in_scope(Rule))
    alarm = django_filters.ModelChoiceFilter(queryset=in_scope(Alarm))

    class Meta:
        model = Notification
        fields = ("channel", "channel_type", "status", "rule", "alarm", "read")

    def filter_mine(self, queryset, name, value):
        return queryset.filter(user=self.request.user) if value else queryset


class SinkFilterSet(django_filters.FilterSet):
    class Meta:
        model = Sink
        fields = ("sink_type", "enabled", "health")


class DeadLetterFilterSet(django_filters.FilterSet):
    sink = django_filters.ModelChoiceFilter(queryset=in_scope(Sink))
    rule = django_filters.ModelChoiceFilter(queryset=in_scope(Rule))

    class Meta:
        model = DeadLetter
        fields = ("sink", "rule", "redelivered")
