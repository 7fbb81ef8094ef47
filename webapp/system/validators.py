"""Password policy beyond Django's validators: character classes (a parameter)."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import ngettext

from webapp.system.cache import param

CLASSES = (re.compile(r"[a-z]"), re.compile(r"[A-Z]"), re.compile(r"[0-9]"),
           re.compile(r"[^A-Za-z0-9]"))


class CharacterClassesValidator:
    """At least `security.password.min_classes` (default 2) of: lower case, upper case,
    digits, other characters."""

    def __init__(self, min_classes: int = 2) -> None:
        self.default = min_classes

    def required(self) -> int:
        return int(param("security.password.min_classes", self.default))

    def validate(self, password: str, user: Any = None) -> None:
        needed = self.required()
        if sum(1 for pattern in CLASSES if pattern.search(password)) < needed:
            raise ValidationError(self.get_help_text(), code="password_too_simple")

    def get_help_text(self) -> str:
        needed = self.required()
        return ngettext(
            "Your password must mix at least %(count)d kind of character (lower case, upper "
            "case, digits, other).",
            "Your password must mix at least %(count)d kinds of characters (lower case, upper "
            "case, digits, other).", needed) % {"count": needed}

