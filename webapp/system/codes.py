"""The form of the codes that name records (departments, roles, menus, dictionaries, parameters)."""

from django.core.validators import RegexValidator
from django.utils.translation import gettext_lazy as _

code_validator = RegexValidator(
    r"^[A-Za-z][A-Za-z0-9_.:-]{0,99}$",
    _("Use letters, digits, '_', '.', ':' or '-', starting with a letter."))
