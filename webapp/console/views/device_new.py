"""Adding a device in the console: the form, then the secret shown once with ready-to-copy
snippets for the product's transport.

The device is created by `webapp.devices.actions.create_device`, which keeps the secret only
encrypted. The plain secret lives in the one response that answers the form's POST (marked
`no-store`): it is in no session, no redirect and no log, so reloading or coming back later
never shows it again (a new one is had by rotating the secret).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _

from webapp.console import access
from webapp.console.access import console_view
from webapp.console.snippets import connection_for
from webapp.core.errors import DomainError
from webapp.devices import actions as device_actions
from webapp.products.models import IDENTIFIER_RE, Product
from webapp.system import scope
from webapp.system.models import Department


def departments_for(user: Any) -> QuerySet[Department]:
    """The departments a new device may be given: the user's scope and their own department
    (the rule of the API's department field)."""
    allowed = scope.department_queryset(user)
    own = getattr(user, "department_id", None)
    if own is not None:
        allowed = allowed | Department.objects.filter(pk=own)
    return allowed.distinct().order_by("name")


class NewDeviceForm(forms.Form):
    product = forms.ModelChoiceField(label=_("Product"), queryset=Product.objects.none(),
                                     to_field_name="identifier")
    identifier = forms.RegexField(label=_("Identifier"), regex=IDENTIFIER_RE, max_length=64,
                                  error_messages={"invalid": _(
                                      "Letters, digits, '.', '_' and '-', starting with a "
                                      "letter or a digit (at most 64).")})
    name = forms.CharField(label=_("Name"), max_length=100, required=False)
    department = forms.ModelChoiceField(label=_("Department"), queryset=Department.objects.none(),
                                        required=False)
    secret = forms.CharField(label=_("Secret"), min_length=8, max_length=128, required=False,
                             strip=False, help_text=_(
                                 "Optional: your own secret (at least 8 characters); "
                                 "generated when left empty."))

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fields: Any = self.fields
        fields["product"].queryset = access.products_for(user).order_by("name")
        fields["department"].queryset = departments_for(user)
        if not self.is_bound:
            self.initial.setdefault("department", getattr(user, "department_id", None))


def _form_page(request: HttpRequest, form: NewDeviceForm, status: int = 200) -> HttpResponse:
    return TemplateResponse(request, "console/devices/new.html", {"form": form}, status=status)


@console_view("devices.view_device", "devices.add_device")
def device_new(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    if request.method != "POST":
        return _form_page(request, NewDeviceForm(user))
    form = NewDeviceForm(user, request.POST)
    if not form.is_valid():
        return _form_page(request, form, status=400)
    data = form.cleaned_data
    try:
        device, secret = device_actions.create_device(
            acting_user=user, product=data["product"], identifier=data["identifier"],
            secret=data["secret"] or None, name=data["name"],
            department=data["department"] or getattr(user, "department", None))
    except DomainError as exc:
        form.add_error("identifier" if exc.code == "duplicate" else None, str(exc))
        return _form_page(request, form, status=400)
    response = TemplateResponse(request, "console/devices/created.html", {
        "device": device, "secret": secret,
        "connection": connection_for(request, device, secret)})
    response["Cache-Control"] = "no-store"
    return response
