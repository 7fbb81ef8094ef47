"""A rule's trigger names its device group by id (`trigger["group"]` is the group's primary
key), no longer by name: a deleted group's name re-created by another department was then
watched by the rule.

Existing names are resolved within the rule's department scope: the department of the rule's
product and below, or for a rule without a product, its creator's department and below (a rule
of a superuser or of the platform itself reaches every group). A name that does not resolve
there (the group is gone, or belongs to another department) is kept as it was, which never
matches a group at run time, and an enabled rule is disabled with the reason, so that its
owner sees it and picks the group again."""

from __future__ import annotations

from django.db import migrations
from django.utils import timezone

UNRESOLVED = ("Its device group {name!r} was named by name and does not resolve to a group "
              "of the rule's department: choose the group again.")


def _scope_path(rule) -> str | None:
    """The department path the rule's group must lie under ("" for any department; None
    when the rule reaches no department-owned group)."""
    product = rule.product
    if product is not None:
        department = product.department
        return department.path if department is not None and department.path else None
    creator = rule.created_by
    if creator is None or creator.is_superuser:
        return ""
    department = creator.department
    return department.path if department is not None and department.path else None


def names_to_ids(apps, schema_editor) -> None:
    Rule = apps.get_model("rules", "Rule")
    DeviceGroup = apps.get_model("devices", "DeviceGroup")
    for rule in Rule.objects.select_related("product__department", "created_by__department"):
        trigger = rule.trigger if isinstance(rule.trigger, dict) else {}
        name = trigger.get("group")
        if not name or not isinstance(name, str):
            continue
        group = DeviceGroup.objects.select_related("department").filter(name=str(name)).first()
        path = _scope_path(rule)
        if group is not None and path is not None and (
                path == "" or (group.department is not None
                               and group.department.path.startswith(path))):
            rule.trigger = {**trigger, "group": group.pk}
            rule.save(update_fields=["trigger"])
        elif rule.enabled:
            rule.enabled = False
            rule.failed_at = timezone.now()
            rule.failure_reason = UNRESOLVED.format(name=str(name))
            rule.save(update_fields=["enabled", "failed_at", "failure_reason"])


def ids_to_names(apps, schema_editor) -> None:
    Rule = apps.get_model("rules", "Rule")
    DeviceGroup = apps.get_model("devices", "DeviceGroup")
    for rule in Rule.objects.all():
        trigger = rule.trigger if isinstance(rule.trigger, dict) else {}
        pk = trigger.get("group")
        if isinstance(pk, int) and not isinstance(pk, bool):
            group = DeviceGroup.objects.filter(pk=pk).first()
            # A group deleted since keeps a name that resolves to nothing.
            rule.trigger = {**trigger, "group": group.name if group else f"#{pk}"}
            rule.save(update_fields=["trigger"])


class Migration(migrations.Migration):

    dependencies = [
        ("rules", "0004_department_owned_help"),
        ("devices", "0005_connection_history"),
        ("system", "0004_notice_department_owned"),
    ]

    operations = [
        migrations.RunPython(names_to_ids, ids_to_names),
    ]
