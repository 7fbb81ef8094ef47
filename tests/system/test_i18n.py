"""English and Simplified Chinese: a complete, compiled catalogue, used per user."""

from __future__ import annotations

import ast
import gettext
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.system.conftest import login

ROOT = Path(__file__).resolve().parents[2]
LOCALE = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES"
# What `makemessages` reads for this catalogue (docs/system.md): the console has its own.
SOURCES = (ROOT / "webapp", ROOT / "config")
SKIPPED = (ROOT / "webapp" / "console",)
# gettext's and Django's keywords: the position of the msgid among the call's arguments.
KEYWORDS = {"_": 0, "gettext": 0, "gettext_lazy": 0, "gettext_noop": 0, "ngettext": 0,
            "ngettext_lazy": 0, "pgettext": 1, "pgettext_lazy": 1, "npgettext": 1,
            "npgettext_lazy": 1}


def _po_entries() -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of the catalogue (plural forms: the first form)."""
    text = (LOCALE / "django.po").read_text(encoding="utf-8")
    entries = []
    for block in text.split("\n\n"):
        def field(name: str, block: str = block) -> str | None:
            match = re.search(rf'^{re.escape(name)} ((?:".*"\n?)+)', block + "\n", re.M)
            if not match:
                return None
            raw = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', match.group(1)))
            return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1),
                                                                         m.group(1)), raw)
        msgid = field("msgid")
        msgstr = field("msgstr") if field("msgstr") is not None else field("msgstr[0]")
        if msgid:
            entries.append((msgid, msgstr or ""))
    return entries


def test_catalogue_is_complete_and_keeps_placeholders():
    """Every string has a translation that keeps its {placeholders} and %(names)s."""
    entries = _po_entries()
    assert len(entries) > 500
    untranslated = [msgid for msgid, msgstr in entries if not msgstr]
    assert not untranslated
    for msgid, msgstr in entries:
        for pattern in (r"\{[a-z_]+(?:![rs])?\}", r"%\([a-z_]+\)[sd]"):
            assert sorted(re.findall(pattern, msgid)) == sorted(re.findall(pattern, msgstr)), \
                msgid


def _sources(suffixes: tuple[str, ...]) -> Iterator[Path]:
    for root in SOURCES:
        for path in sorted(root.rglob("*")):
            if path.suffix in suffixes and not any(path.is_relative_to(s) for s in SKIPPED):
                yield path


def _python_msgids(path: Path) -> Iterator[tuple[str, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        position = KEYWORDS.get(name or "")
        if position is None or len(node.args) <= position:
            continue
        argument = node.args[position]
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            yield f"{path.relative_to(ROOT)}:{node.lineno}", argument.value


def _template_msgids(path: Path) -> Iterator[tuple[str, str]]:
    """{% translate %} and {% blocktranslate %} as `makemessages` sees them (templatize)."""
    from django.utils.translation.template import templatize

    literal = r"""u?(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
    code = templatize(path.read_text(encoding="utf-8"), origin=str(path))
    for match in re.finditer(rf"\b(_|n?p?gettext)\(\s*({literal})(?:\s*,\s*({literal}))?",
                             code):
        text = match.group(3) if match.group(1).startswith(("pgettext", "npgettext")) \
            else match.group(2)
        if text:
            yield str(path.relative_to(ROOT)), ast.literal_eval(text)


def test_every_string_of_the_code_is_in_the_catalogue():
    """Each translatable string of webapp/ and config/ (but the console's) has its Chinese
    translation: fails when strings were added without running makemessages (docs/system.md)."""
    translated = {msgid for msgid, msgstr in _po_entries() if msgstr}
    found = [*(m for p in _sources((".py",)) for m in _python_msgids(p)),
             *(m for p in _sources((".html", ".txt")) for m in _template_msgids(p))]
    assert len(found) > 500
    missing = [f"{where}: {msgid!r}" for where, msgid in found
               if msgid and msgid not in translated]
    assert not missing, "run makemessages and translate:\n" + "\n".join(missing[:20])
    fuzzy = (LOCALE / "django.po").read_text(encoding="utf-8").count("#, fuzzy")
    assert not fuzzy, "check and translate the fuzzy entries of django.po"


def test_compiled_catalogue_matches_the_po():
    """django.mo holds every translation of django.po (compilemessages was run)."""
    with (LOCALE / "django.mo").open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    stale = [msgid for msgid, msgstr in _po_entries()
             if "\n" not in msgid and compiled.gettext(msgid) != msgstr]
    assert not stale[:5]


@pytest.mark.django_db
def test_api_speaks_the_users_language(org, redis_prefix):
    """Accept-Language for anonymous callers; the user's own language once signed in."""
    org.user("li", org.a, language="zh-hans")
    for _ in range(5):
        login(APIClient(), "li", "wrong", REMOTE_ADDR="10.9.9.9")
    locked = login(APIClient(), "li", "wrong", REMOTE_ADDR="10.9.9.9",
                   HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "登录失败次数过多" in locked.json()["detail"]
    client = APIClient()
    token = login(client, "li").json()["access"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    body = client.get("/api/v1/auth/me/").json()
    assert body["menus"] == [] or all(m["name"] for m in body["menus"])
    denied = client.get("/api/v1/devices/")
    assert denied.status_code == 403 and denied["Content-Language"] == "zh-hans"
    assert "权限" in denied.json()["detail"]


@pytest.mark.django_db
def test_menu_names_follow_the_language(org, api_as):
    """Built-in menu names come translated in /auth/me/."""
    from webapp.system.models import Role

    user = org.user("li", org.a, roles=[Role.objects.get(code="viewer")], language="zh-hans")
    names = [m["name"] for m in api_as(user).get("/api/v1/auth/me/").json()["menus"]]
    assert "设备管理" in names and "系统管理" in names
