"""Who may open a console page, and the records each user reaches.

Every console view is wrapped by `console_view(*permissions)`: anonymous users go to the
login page, users without the permissions get a 403 page, and users whose password must be
changed go to the password page first. Every list and detail reads through the functions below,
which apply the user's data scope (`webapp.system.scope`) — the same restriction the API and the
admin use.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse

from webapp.devices.models import Device
from webapp.products.models import Product
from webapp.rules.models import Alarm
from webapp.system import scope
from webapp.telemetry.models import DeviceMessage

View = Callable[..., HttpResponse]


def console_view(*permissions: str, password_page: bool = False) -> Callable[[View], View]:
    """Require a signed-in user holding all of `permissions`."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user: Any = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path(), reverse("console:login"))
            if getattr(user, "must_change_password", False) and not password_page:
                return redirect(f"{reverse('console:password')}?next={request.path}")
            if permissions and not user.has_perms(permissions):
                return TemplateResponse(request, "console/forbidden.html",
                                        {"permissions": permissions}, status=403)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def products_for(user: Any) -> QuerySet[Product]:
    return scope.restrict(Product.objects.all(), user)


def devices_for(user: Any) -> QuerySet[Device]:
    return scope.restrict(Device.objects.all(), user)


def sees_everything(user: Any) -> bool:
    return scope.user_scope(user).everything


def messages_for(user: Any) -> QuerySet[DeviceMessage]:
    """The message log rows of the devices in the user's scope (the log names its device by
    identifier, so the restriction goes through the devices)."""
    queryset = DeviceMessage.objects.all()
    if sees_everything(user):
        return queryset
    return queryset.filter(device_identifier__in=devices_for(user).values("identifier"))


def alarms_for(user: Any) -> QuerySet[Alarm]:
    """Alarms of the devices in scope, and device-less alarms of the products in scope."""
    queryset = Alarm.objects.all()
    if scope.scope_fields(Alarm) is not None:
        return scope.restrict(queryset, user)
    if sees_everything(user):
        return queryset
    return queryset.filter(
        Q(device__in=devices_for(user).values("pk"))
        | Q(device__isnull=True, product__in=products_for(user).values("pk")))
