"""The OpenAPI schema generates, validates, and has no warnings from system views."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db

SYSTEM_ROUTES = ("users", "departments", "positions", "roles", "menus", "dictionaries",
                 "dictionary-items", "parameters", "notices", "messages", "operation-logs",
                 "login-logs", "online-users", "api-keys", "task-runs", "auth")


def _is_ours(line: str) -> bool:
    if "webapp/system/" in line or "webapp/core/" in line or "enum naming" in line:
        return True
    return any(f"/api/v1/{prefix}/" in line for prefix in SYSTEM_ROUTES) or bool(
        re.search(r"\[(User|Department|Position|Role|Menu|DictType|DictItem|Parameter|"
                  r"Notice|Message|OperationLog|LoginLog|OnlineUser|ApiKey|TaskRun|Login|"
                  r"Refresh|Logout|Me|Password)(ViewSet|View)\]", line))


def test_schema_validates_without_warnings_from_our_views(tmp_path, capsys):
    """`spectacular --validate` passes; no warning concerns system views or enum names."""
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--file", str(out))
    captured = capsys.readouterr()
    warnings = [line for line in (captured.err + captured.out).splitlines()
                if "Warning" in line or "Error" in line]
    assert not [line for line in warnings if _is_ours(line)], warnings
    text = out.read_text()
    assert "/api/v1/users/" in text and "/api/v1/auth/logout/" in text
    assert "apiKeyAuth" in text and "jwtAuth" in text


def test_docs_are_served_without_a_cdn(client, admin_user):
    """/api/docs/ loads Swagger UI from our own static files (for logged-in users: the
    schema and the docs are not public, tests/security/test_deploy_settings.py)."""
    client.force_login(admin_user)
    page = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/" in page and "cdn." not in page
