"""Issue item 3 and L2, L3, L4, L6, M5: what a deployment gets.

- DJANGO_HTTPS=1 turns on what Django's deployment checklist asks behind TLS, and
  `check --deploy --fail-level WARNING` reports nothing (L6).
- Password reset links point at PUBLIC_BASE_URL whatever Host the request names (M5).
- docker/: real host names, no default secret, no published metrics, and a .dockerignore that
  keeps .env and var/ out of the image (M5, L2, L3).
- /api/schema/ and /api/docs/ need a login; the edge's unauthenticated /metrics listens on
  loopback unless told otherwise (L2).
- bootstrap keeps a generated admin password out of the log, in a 0600 file, and the first
  login must change it (L4)."""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core import mail
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.edge.edge_process import ROOT, running_edge

DEPLOY = {"DJANGO_DEBUG": "0", "DJANGO_ALLOWED_HOSTS": "iot.example.com"}


def deploy_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SECURE_"))}
    env.update(DEPLOY, DJANGO_SECRET_KEY=secrets.token_urlsafe(50), **extra)
    return env


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


# -- DJANGO_HTTPS and check --deploy ---------------------------------------------------------


@pytest.mark.e2e
def test_check_deploy_reports_no_issue_behind_https():
    """The issue's command, as a real process."""
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=deploy_env(DJANGO_HTTPS="1"), capture_output=True, text=True,
        timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no issues" in out.stdout


@pytest.mark.e2e
def test_check_deploy_complains_without_https():
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=deploy_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    for code in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert code in out.stderr


SHOW = ("import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({n: getattr(s, n) for n in ('SESSION_COOKIE_SECURE', "
        "'CSRF_COOKIE_SECURE', 'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', "
        "'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_HSTS_PRELOAD', 'SECURE_PROXY_SSL_HEADER')}))")


@pytest.mark.e2e
def test_https_settings_follow_the_switch():
    env = deploy_env(DJANGO_HTTPS="1", DJANGO_SETTINGS_MODULE="config.settings")
    on = json.loads(run_python(SHOW, env).stdout.strip().splitlines()[-1])
    assert on == {"SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True,
                  "SECURE_SSL_REDIRECT": True, "SECURE_HSTS_SECONDS": 31536000,
                  "SECURE_HSTS_INCLUDE_SUBDOMAINS": True, "SECURE_HSTS_PRELOAD": True,
                  "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]}
    env = deploy_env(DJANGO_SETTINGS_MODULE="config.settings")
    off = json.loads(run_python(SHOW, env).stdout.strip().splitlines()[-1])
    # Without a TLS proxy in front, X-Forwarded-Proto is never believed.
    assert off["SECURE_PROXY_SSL_HEADER"] is None and not off["SESSION_COOKIE_SECURE"]
    assert off["SECURE_HSTS_SECONDS"] == 0


# -- M5: password reset links ----------------------------------------------------------------


@pytest.mark.django_db
def test_password_reset_link_ignores_the_host_header(client, settings, django_user_model):
    """The review's exploit: with any host accepted (compose had "*"), a reset requested with
    `Host: attacker.example` mailed the administrator a link to attacker.example."""
    settings.ALLOWED_HOSTS = ["*"]
    settings.PUBLIC_BASE_URL = "https://iot.example.com"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    django_user_model.objects.create_superuser("chief", "chief@example.com", "Pw-chief-2468")
    response = client.post("/admin/password_reset/", {"email": "chief@example.com"},
                           HTTP_HOST="attacker.example")
    assert response.status_code == 302
    [message] = mail.outbox
    assert "attacker.example" not in message.body + message.subject
    assert re.search(r"https://iot\.example\.com/reset/[^/\s]+/[^/\s]+/", message.body)


# -- docker/ ------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker" / "compose.yml").read_text())


def test_compose_names_real_hosts_and_holds_no_secret():
    services = compose()["services"]
    for name, service in services.items():
        environment = service.get("environment") or {}
        hosts = str(environment.get("DJANGO_ALLOWED_HOSTS", ""))
        assert "*" not in hosts.replace("${", "").split(":-")[-1], name
        for variable in ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD"):
            if variable in environment:  # from the operator's .env, required, no default
                assert re.fullmatch(r"\$\{" + variable + r":\?[^}]*\}", environment[variable])
        for url in ("DATABASE_URL", "REDIS_URL"):
            if url in environment:
                assert "${POSTGRES_PASSWORD:?" in environment[url] or \
                    "${REDIS_PASSWORD:?" in environment[url], name
        ports = " ".join(service.get("ports") or [])
        assert "19100" not in ports, f"{name} publishes the edge metrics"
    assert "--requirepass" in services["redis"]["command"]
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]


def test_dockerignore_keeps_secrets_and_state_out_of_the_image():
    context = (ROOT / "docker" / compose()["x-app"]["build"]["context"]).resolve()
    assert context == ROOT
    ignored = {line.strip().rstrip("/") for line in (context / ".dockerignore").read_text()
               .splitlines() if line.strip() and not line.startswith("#")}
    assert {".env", "var", ".venv", ".git"} <= ignored
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert not re.search(r"^\s*(ENV|ARG)\b.*SECRET", dockerfile, re.MULTILINE)
    assert "19100" not in dockerfile.split("EXPOSE", 1)[1].splitlines()[0]


# -- L2: the API schema and the edge metrics -------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_api_schema_and_docs_need_a_login(path, client, admin_user):
    assert client.get(path).status_code in (401, 403)
    client.force_login(admin_user)
    assert client.get(path).status_code == 200


def listening(port: int) -> set[str]:
    """The IPv4 addresses something listens on at `port` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, hex_port = fields[1].split(":")
        if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return found


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_edge_metrics_listen_on_loopback_by_default(redis_url, redis_prefix):
    """EDGE_HOST=0.0.0.0 opens MQTT to the network; /metrics (no authentication) stays on
    127.0.0.1 unless EDGE_METRICS_HOST names another address."""
    with running_edge(redis_url, redis_prefix, {"EDGE_HOST": "0.0.0.0"}) as edge:
        assert listening(edge.mqtt_port) == {"0.0.0.0"}
        assert listening(edge.metrics_port) == {"127.0.0.1"}


# -- L4: the generated admin password ----------------------------------------------------------


@pytest.mark.django_db
def test_bootstrap_keeps_the_generated_password_out_of_the_log(settings, tmp_path, monkeypatch,
                                                              django_user_model):
    monkeypatch.delenv("DJANGO_SUPERUSER_USERNAME", raising=False)
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    settings.VAR_DIR = tmp_path
    out = io.StringIO()
    call_command("bootstrap", "--no-demo", stdout=out)
    path = tmp_path / "admin-password"
    password = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert password not in out.getvalue() and str(path) in out.getvalue()
    admin = django_user_model.objects.get(username="admin")
    assert admin.check_password(password) and admin.must_change_password
    client = APIClient()
    token = client.post("/api/v1/auth/token/", {"username": "admin", "password": password},
                        format="json").json()["access"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    refused = client.get("/api/v1/devices/")
    assert refused.status_code == 403 and refused.json()["code"] == "password_change_required"


@pytest.mark.django_db
def test_make_run_shows_the_generated_password_once_and_it_must_be_changed(
        settings, tmp_path, monkeypatch, django_user_model):
    """`make run` (runplatform) prints the generated password as the README's first step
    needs; it is the file's password and must still be changed at the first login."""
    monkeypatch.delenv("DJANGO_SUPERUSER_USERNAME", raising=False)
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    settings.VAR_DIR = tmp_path
    out = io.StringIO()
    call_command("bootstrap", "--no-demo", "--show-password", stdout=out)
    password = (tmp_path / "admin-password").read_text().strip()
    assert f"password {password!r}" in out.getvalue()
    assert django_user_model.objects.get(username="admin").must_change_password
