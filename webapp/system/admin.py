from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.utils.translation import gettext_lazy as _

from webapp.system.models import Department, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "email", "department", "is_active", "is_staff", "last_login")
    list_filter = ("is_active", "is_staff", "department")
    fieldsets = (
        *(BaseUserAdmin.fieldsets or ()),
        (_("Organisation"), {"fields": ("department", "phone", "language")}),
    )


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    list_display = ("name", "parent", "leader", "phone", "is_active")
    search_fields = ("name", "leader")
    list_filter = ("is_active",)
