"""The console's own records: custom dashboards (docs/console.md, "Dashboards")."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from webapp.system.models import DepartmentOwned


def empty_layout() -> dict:
    return {"widgets": []}


class Dashboard(DepartmentOwned):
    """A grid of widgets (charts, gauges, values, map, alarms, tables, command buttons) over
    devices of the data scope. It belongs to a department and is shared with every user whose
    data scope reaches that department; its layout is validated by
    `webapp.console.dashboards.validate_layout` before it is stored."""

    name = models.CharField(_("name"), max_length=100)
    layout = models.JSONField(_("layout"), default=empty_layout, blank=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("dashboard")
        verbose_name_plural = _("dashboards")
        ordering = ("name", "id")

    def __str__(self) -> str:
        return self.name
