"""Device groups in the console: the groups in the user's data scope, a form to create one
and a form to add or remove members, through the devices app's group actions.

Members are named by identifier; a name the user cannot reach (unknown, or another
department's device) refuses the whole change with the names, so nothing half-applies.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from webapp.console import access
from webapp.console.access import console_view
from webapp.console.views.device_new import departments_for
from webapp.core.errors import DomainError
from webapp.devices import actions as device_actions
from webapp.devices.models import Device, DeviceGroup
from webapp.system import scope
from webapp.system.models import Department

SEPARATORS = re.compile(r"[\s,;]+")


class GroupForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=100)
    description = forms.CharField(label=gettext_lazy("Description"), required=False,
                                  widget=forms.Textarea(attrs={"rows": 2}))
    department = forms.ModelChoiceField(label=gettext_lazy("Department"), required=False,
                                        queryset=Department.objects.none())

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fields: Any = self.fields
        fields["department"].queryset = departments_for(user)
        if not self.is_bound:
            self.initial.setdefault("department", getattr(user, "department_id", None))


def groups_for(user: Any) -> Any:
    return scope.restrict(DeviceGroup.objects.all(), user)


def _identifiers(text: str) -> list[str]:
    return [name for name in SEPARATORS.split(text.strip()) if name]


def _page(request: HttpRequest, form: GroupForm, status: int = 200) -> HttpResponse:
    user: Any = request.user
    groups = groups_for(user).select_related("department").annotate(
        size=Count("devices", distinct=True)).order_by("name")
    return TemplateResponse(request, "console/devices/groups.html", {
        "groups": groups, "form": form,
        "can_add": user.has_perm("devices.add_devicegroup"),
        "can_change": user.has_perm("devices.change_devicegroup"),
    }, status=status)


@console_view("devices.view_device", "devices.view_devicegroup")
def group_list(request: HttpRequest) -> HttpResponse:
    return _page(request, GroupForm(request.user))


@console_view("devices.view_device", "devices.add_devicegroup")
def group_create(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    if request.method != "POST":
        return redirect("console:device-groups")
    form = GroupForm(user, request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    data = form.cleaned_data
    try:
        group = device_actions.create_group(data={
            "name": data["name"], "description": data["description"],
            "department": data["department"] or getattr(user, "department", None)})
    except DomainError as exc:
        form.add_error("name", str(exc))
        return _page(request, form, status=400)
    messages.success(request, _("Group {name} created.").format(name=group.name))
    return redirect("console:device-groups")


@console_view("devices.view_device", "devices.change_devicegroup")
def group_members(request: HttpRequest, pk: int) -> HttpResponse:
    user: Any = request.user
    if request.method != "POST":
        return redirect("console:device-groups")
    group = groups_for(user).filter(pk=pk).first()
    if group is None:
        messages.error(request, _("This group does not exist or is outside your data scope."))
        return redirect("console:device-groups")
    add = _identifiers(request.POST.get("add", ""))
    remove = _identifiers(request.POST.get("remove", ""))
    reachable = {d.identifier: d for d in access.devices_for(user).filter(
        identifier__in=add + remove)}
    unknown = sorted({name for name in add + remove if name not in reachable})
    if unknown:
        messages.error(request, _("Unknown devices or outside your data scope: {names}. "
                                  "Nothing was changed.").format(names=", ".join(unknown)))
        return redirect("console:device-groups")
    members: list[Device] = [reachable[name] for name in add]
    device_actions.change_members(group=group, add=members,
                                  remove=[reachable[name] for name in remove])
    messages.success(request, _("Group {name}: {added} added, {removed} removed.").format(
        name=group.name, added=len(add), removed=len(remove)))
    return redirect("console:device-groups")
