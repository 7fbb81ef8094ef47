"""Dictionaries (named lists of choices) and parameters (runtime settings), both edited in the
admin and read through `webapp.system.cache`."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from webapp.system.choices import ParameterType
from webapp.system.codes import code_validator


class DictType(models.Model):
    """A dictionary: a named list of value/label items used as choices."""

    code = models.CharField(_("code"), max_length=100, unique=True, validators=[code_validator])
    name = models.CharField(_("name"), max_length=100)
    is_active = models.BooleanField(_("active"), default=True)
    is_builtin = models.BooleanField(_("built-in"), default=False)
    remark = models.TextField(_("remark"), blank=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("dictionary")
        verbose_name_plural = _("dictionaries")
        ordering = ("code",)

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class DictItem(models.Model):
    dict_type = models.ForeignKey(DictType, verbose_name=_("dictionary"),
                                  on_delete=models.CASCADE, related_name="items")
    value = models.CharField(_("value"), max_length=100)
    label = models.CharField(_("label"), max_length=100)
    order = models.PositiveIntegerField(_("order"), default=0)
    is_default = models.BooleanField(_("default"), default=False)
    color = models.CharField(_("colour"), max_length=20, blank=True,
                             help_text=_("A CSS colour or a style name for badges."))
    is_active = models.BooleanField(_("active"), default=True)
    remark = models.TextField(_("remark"), blank=True)

    class Meta:
        verbose_name = _("dictionary item")
        verbose_name_plural = _("dictionary items")
        ordering = ("dict_type", "order", "value")
        constraints = [models.UniqueConstraint(fields=("dict_type", "value"),
                                               name="dict_item_value_unique")]

    def __str__(self) -> str:
        return self.label


class Parameter(models.Model):
    """A runtime setting editable in the admin (RuoYi `sys_config`), cached."""

    key = models.CharField(_("key"), max_length=100, unique=True, validators=[code_validator])
    name = models.CharField(_("name"), max_length=100)
    value = models.TextField(_("value"), blank=True)
    value_type = models.CharField(_("type"), max_length=16, choices=ParameterType.choices,
                                  default=ParameterType.STRING)
    is_builtin = models.BooleanField(_("built-in"), default=False)
    remark = models.TextField(_("remark"), blank=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("parameter")
        verbose_name_plural = _("parameters")
        ordering = ("key",)

    def __str__(self) -> str:
        return self.key
