"""The console's pages, served at the site's root `/` (docs/processes.md)."""

from django.urls import path

from webapp.console.views import (
    alarms,
    auth,
    bigscreen,
    dashboard,
    dashboards,
    debug,
    device_groups,
    device_import,
    device_map,
    device_new,
    devices,
    monitoring,
    ota,
    product_edit,
    products,
    rules,
)

app_name = "console"

IDENTIFIER = "<str:identifier>"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("login/", auth.ConsoleLoginView.as_view(), name="login"),
    path("logout/", auth.ConsoleLogoutView.as_view(), name="logout"),
    path("language/", auth.language, name="language"),
    path("password/", auth.password, name="password"),
    path("profile/", auth.profile, name="profile"),
    path("products/", products.product_list, name="products"),
    # before the product page: "new" is this module's page, not a product's identifier (no
    # product may be created as "new": webapp.products.models.RESERVED_PRODUCT_IDENTIFIERS)
    *product_edit.urlpatterns,
    path(f"products/{IDENTIFIER}/", products.product_detail, name="product"),
    path("devices/", devices.device_list, name="devices"),
    *device_map.urlpatterns,
    # before the device page: "new", "import", "groups" are these pages, not devices'
    # identifiers (none may be created so: webapp.products.models.RESERVED_DEVICE_IDENTIFIERS;
    # a new literal route under devices/ or products/ goes into that list too)
    path("devices/new/", device_new.device_new, name="device-new"),
    path("devices/import/", device_import.device_import, name="device-import"),
    path("devices/groups/", device_groups.group_list, name="device-groups"),
    path("devices/groups/new/", device_groups.group_create, name="device-group-new"),
    path("devices/groups/<int:pk>/members/", device_groups.group_members,
         name="device-group-members"),
    path(f"devices/{IDENTIFIER}/", devices.device_detail, name="device"),
    path(f"devices/{IDENTIFIER}/commands/", devices.send_command, name="device-command"),
    path(f"devices/{IDENTIFIER}/desired/", devices.set_desired, name="device-desired"),
    path("alarms/", alarms.alarm_list, name="alarms"),
    path("alarms/<int:pk>/acknowledge/", alarms.acknowledge, name="alarm-acknowledge"),
    path("alarms/<int:pk>/clear/", alarms.clear, name="alarm-clear"),
    *alarms.urlpatterns,
    # Each of these modules names its own routes (its `urlpatterns`).
    *rules.urlpatterns,
    *dashboards.urlpatterns,
    *bigscreen.urlpatterns,
    *debug.urlpatterns,
    *ota.urlpatterns,
    *monitoring.urlpatterns,
]
