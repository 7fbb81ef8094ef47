"""`django.contrib.admin` with the ThingLinks site (navigation, lockout-aware login, language
switch): listed in INSTALLED_APPS instead of "django.contrib.admin"."""

from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    default_site = "webapp.system.site.ThingLinksAdminSite"
