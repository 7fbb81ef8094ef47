from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RulesConfig(AppConfig):
    name = "webapp.rules"
    label = "rules"
    verbose_name = _("Rules, alarms and forwarding")

    def ready(self) -> None:
        from webapp.rules import engine, models
        from webapp.system import runs, scope
        from webapp.telemetry.hooks import after_store, on_uplink

        # Data scope (webapp/system/scope.py): a rule belongs where its product belongs, an
        # alarm where its device (or, without one, its product) belongs.
        scope.register(models.Rule, department="product__department", owner="created_by")
        scope.register(models.Alarm, department=("device__department", "product__department"))
        # Channels and sinks belong to their department (and, under "only own records", to
        # who made them); a dead letter belongs where its sink belongs; a sent notification
        # where its rule or alarm belongs (its recipient always sees it: see
        # api.NotificationViewSet and admin.NotificationAdmin).
        scope.register(models.NotificationChannel, department="department", owner="created_by")
        scope.register(models.Sink, department="department", owner="created_by")
        scope.register(models.DeadLetter, department="sink__department",
                       owner="sink__created_by")
        scope.register(models.Notification, department=(
            "rule__product__department", "alarm__device__department",
            "alarm__product__department"), owner="user")
        # A scheduled rule's beat schedule and its runs belong where the rule belongs.
        runs.owned_schedules(models.Rule, "periodic_task")

        after_store(engine.on_batch)
        on_uplink("event")(engine.on_events)
        on_uplink("cmdrsp")(engine.on_command_responses)

        # Rules on a device group are compiled with the group's members: recompile the
        # index when membership changes.
        from django.db.models.signals import m2m_changed, post_delete

        from webapp.devices.models import Device, DeviceGroup

        m2m_changed.connect(engine.on_group_change, sender=Device.groups.through,
                            dispatch_uid="rules.group-membership")
        post_delete.connect(engine.on_group_change, sender=DeviceGroup,
                            dispatch_uid="rules.group-deleted")
        post_delete.connect(engine.on_device_deleted, sender=Device,
                            dispatch_uid="rules.device-deleted")
