"""The console's navigation, ThingLinks' order: dashboard, products, devices, rules and alarms,
then monitoring and system.

The console's own pages are shown by permission. The management pages come from the user's
menu tree (`webapp.system.menus.menus_for`, the one administrators edit): every directory of
admin pages the console does not cover itself becomes a section, for staff users (only they
reach the admin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.urls import reverse
from django.utils.translation import gettext, gettext_lazy, gettext_noop

from webapp.system.menus import menus_for

# The built-in menu names (webapp/system/defaults.py), so that they are translated here too.
BUILTIN_MENU_NAMES = [
    gettext_noop("Monitoring"), gettext_noop("System"), gettext_noop("Online users"),
    gettext_noop("Scheduled tasks"), gettext_noop("Task runs"), gettext_noop("Users"),
    gettext_noop("Roles"), gettext_noop("Menus"), gettext_noop("Departments"),
    gettext_noop("Positions"), gettext_noop("Dictionaries"), gettext_noop("Parameters"),
    gettext_noop("Notices"), gettext_noop("Logs"), gettext_noop("Operation log"),
    gettext_noop("Login log"),
]
# Admin pages the console's own sections already lead to.
COVERED_ADMIN_PATHS = ("/admin/devices/", "/admin/products/", "/admin/rules/", "/admin/ota/")


@dataclass
class Item:
    title: Any
    url: str
    icon: str = ""
    active: bool = False
    external: bool = False


@dataclass
class Section:
    title: Any
    icon: str = ""
    items: list[Item] = field(default_factory=list)


def _page(title: Any, name: str, current: str, icon: str, *also: str) -> Item:
    return Item(title, reverse(f"console:{name}"), icon, current in (name, *also))


def build(user: Any, current: str) -> list[Section]:
    """The sections `user` sees; `current` is the URL name of the page shown."""
    sections = [Section(gettext_lazy("Overview"), "home", [
        _page(gettext_lazy("Dashboard"), "dashboard", current, "home")])]
    if user.has_perm("console.view_dashboard"):
        sections[0].items.append(_page(gettext_lazy("Dashboards"), "dashboards", current,
                                       "layout", "dashboard-view"))
    if user.has_perm("products.view_product"):
        sections.append(Section(gettext_lazy("Products"), "box", [
            _page(gettext_lazy("Products"), "products", current, "box", "product",
                  "product-dashboard")]))
    if user.has_perm("devices.view_device"):
        sections.append(Section(gettext_lazy("Devices"), "cpu", [
            _page(gettext_lazy("Devices"), "devices", current, "cpu", "device"),
            _page(gettext_lazy("Device map"), "map", current, "map")]))
        if user.has_perm("telemetry.view_devicemessage"):
            sections[-1].items.append(_page(gettext_lazy("Device debugging"), "debug",
                                            current, "terminal"))
        sections[0].items.append(_page(gettext_lazy("Big screen"), "bigscreen", current,
                                       "monitor"))
    ota = Section(gettext_lazy("OTA"), "download")
    if user.has_perm("ota.view_otapackage"):
        ota.items.append(_page(gettext_lazy("OTA packages"), "ota", current, "package"))
    if user.has_perm("ota.view_otacampaign"):
        ota.items.append(_page(gettext_lazy("OTA campaigns"), "ota-campaigns", current,
                               "refresh-cw", "ota-campaign", "ota-campaign-new"))
    if ota.items:
        sections.append(ota)
    rules = Section(gettext_lazy("Rules & alarms"), "bell")
    if user.has_perm("rules.view_alarm"):
        rules.items.append(_page(gettext_lazy("Alarms"), "alarms", current, "bell", "alarm"))
    if user.has_perm("rules.view_rule"):
        rules.items.append(_page(gettext_lazy("Rules"), "rules", current, "git-branch",
                                 "rule", "rule-new"))
    # Channels and sinks have no console page yet: staff reach them in the admin, whose
    # rules directory the menu sections below leave out (COVERED_ADMIN_PATHS).
    if user.is_staff and user.has_perm("rules.view_notificationchannel"):
        rules.items.append(Item(gettext_lazy("Notification channels"),
                                reverse("admin:rules_notificationchannel_changelist"), "send",
                                external=True))
    if user.is_staff and user.has_perm("rules.view_sink"):
        rules.items.append(Item(gettext_lazy("Sinks"), reverse("admin:rules_sink_changelist"),
                                "share", external=True))
    if rules.items:
        sections.append(rules)
    monitoring = Section(gettext_lazy("Monitoring"), "activity")
    if user.has_perm("system.view_monitoring"):
        monitoring.items.append(_page(gettext_lazy("Platform monitoring"), "monitoring",
                                      current, "activity"))
    if user.is_staff:
        admin = _admin_sections(user)
        # The admin's monitoring pages (online users, scheduled tasks, task runs) join the
        # console's monitoring section rather than repeating its title.
        for section in list(admin):
            if monitoring.items and str(section.title) == str(monitoring.title):
                monitoring.items.extend(section.items)
                admin.remove(section)
        if monitoring.items:
            sections.append(monitoring)
        sections.extend(admin)
    elif monitoring.items:
        sections.append(monitoring)
    return sections


def _admin_pages(node: dict[str, Any]) -> list[Item]:
    pages = []
    for child in node["children"]:
        path = child.get("path") or ""
        if child["menu_type"] == "page" and path.startswith("/admin/"):
            pages.append(Item(gettext(child["name"]), path, child.get("icon") or "",
                              external=True))
        pages.extend(_admin_pages(child))
    return pages


def _admin_sections(user: Any) -> list[Section]:
    sections = []
    for root in menus_for(user):
        pages = [p for p in _admin_pages(root) if not p.url.startswith(COVERED_ADMIN_PATHS)]
        if pages:
            sections.append(Section(gettext(root["name"]), root.get("icon") or "", pages))
    return sections
