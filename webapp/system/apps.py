from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SystemConfig(AppConfig):
    name = "webapp.system"
    label = "system"
    verbose_name = _("System management")

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from webapp.system import defaults, models, oplog, scope, signals, tasks

        post_migrate.connect(defaults.grant_builtin_permissions,
                             dispatch_uid="tl_builtin_permissions")
        oplog.connect()
        signals.connect()
        tasks.connect()
        scope.register(models.User, department="department", owner="pk")
        scope.register(models.Department, department="pk")
        scope.register(models.OperationLog, department="department", owner="user")
        scope.register(models.LoginLog, department="user__department", owner="user")
        scope.register(models.LoginSession, department="user__department", owner="user")
        scope.register(models.ApiKey, department="user__department", owner="user")
        scope.register(models.Message, owner="recipient")

