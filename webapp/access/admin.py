from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from webapp.access import actions
from webapp.access.models import AclRule, DeviceKeys, ProductRegistration
from webapp.system.admin_scope import ScopedAdminMixin, ScopedRelatedFieldListFilter


@admin.register(AclRule)
class AclRuleAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("product", "device", "action", "topic", "decision", "priority", "enabled")
    list_filter = ("action", "decision", "enabled", ("product", ScopedRelatedFieldListFilter))
    search_fields = ("topic", "product__identifier", "device__identifier", "description")
    autocomplete_fields = ("device",)
    readonly_fields = ("created", "updated")

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in form.changed_data}
        if change:
            actions.update_rule(rule=obj, data=data)
            return
        saved = actions.create_rule(**{
            name: form.cleaned_data[name] for name in (
                "product", "device", "action", "topic", "decision", "priority", "enabled",
                "description")})
        obj.pk = saved.pk
        obj._state = saved._state

    def delete_model(self, request, obj):
        actions.delete_rule(rule=obj)


@admin.register(ProductRegistration)
class ProductRegistrationAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("product", "enabled", "updated")
    fields = ("product", "enabled", "created", "updated")
    readonly_fields = ("enabled", "created", "updated")
    actions = ("rotate_secret",)

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "product") if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return
        saved, plain = actions.enable_registration(product=form.cleaned_data["product"])
        obj.pk = saved.pk
        obj._state = saved._state
        self.message_user(request, _("Product secret (shown once): {secret}").format(
            secret=plain), messages.WARNING)

    def delete_model(self, request, obj):
        actions.disable_registration(registration=obj)

    @admin.action(description=_("Rotate the product secret"))
    def rotate_secret(self, request, queryset):
        for registration in queryset.select_related("product"):
            _saved, plain = actions.enable_registration(product=registration.product)
            self.message_user(request, _("{product}: new secret (shown once): {secret}").format(
                product=registration.product.identifier, secret=plain), messages.WARNING)


@admin.register(DeviceKeys)
class DeviceKeysAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("device", "updated")
    fields = ("device", "created", "updated")
    readonly_fields = ("created", "updated")
    autocomplete_fields = ("device",)
    actions = ("regenerate",)

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "device") if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return
        self._generate(request, form.cleaned_data["device"], obj)

    def _generate(self, request, device, obj=None):
        saved, plain = actions.set_device_keys(device=device)
        if obj is not None:
            obj.pk = saved.pk
            obj._state = saved._state
        self.message_user(request, _(
            "{device}: signKey {sign}, encryptKey {key}, encryptVector {iv} (shown once)").format(
            device=device.identifier, sign=plain["sign_key"], key=plain["encrypt_key"],
            iv=plain["encrypt_vector"]), messages.WARNING)

    def delete_model(self, request, obj):
        actions.delete_device_keys(device_keys=obj)

    @admin.action(description=_("Generate new keys"))
    def regenerate(self, request, queryset):
        for device_keys in queryset.select_related("device"):
            self._generate(request, device_keys.device)
