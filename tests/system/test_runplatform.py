"""`manage.py runplatform` (make run): what it starts."""

import subprocess
import sys

import pytest

from webapp.devices.management.commands.runplatform import Command, child_env

OPTIONS = {"web_host": "127.0.0.1", "web_port": 8000, "only": ""}


def celery_logger_level(env):
    """The `celery` logger's level in a fresh process configured like a child."""
    code = ("import django, logging; django.setup(); "
            "print(logging.getLevelName(logging.getLogger('celery').getEffectiveLevel()))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.e2e
def test_children_log_celery_at_warning_unless_asked(monkeypatch):
    """What Celery's worker and beat print goes through Django's logging: the children's
    environment, not only `-l`, must carry the level."""
    monkeypatch.delenv("CELERY_LOG_LEVEL", raising=False)
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "config.settings")
    assert celery_logger_level(child_env()) == "WARNING"
    monkeypatch.setenv("CELERY_LOG_LEVEL", "INFO")
    assert celery_logger_level(child_env()) == "INFO"


def argv(name, monkeypatch, level=None):
    if level is None:
        monkeypatch.delenv("CELERY_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("CELERY_LOG_LEVEL", level)
    return next(c for c in Command().children(OPTIONS) if c.name == name).argv


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_celery_logs_warnings_unless_asked(monkeypatch, name):
    """Beat sends tasks every few seconds: at INFO the combined log is a line per task run."""
    default = argv(name, monkeypatch)
    assert default[default.index("-l") + 1] == "WARNING"
    asked = argv(name, monkeypatch, "INFO")
    assert asked[asked.index("-l") + 1] == "INFO"


def test_every_process_is_started_and_only_selects():
    names = [c.name for c in Command().children(OPTIONS)]
    assert names == ["edge", "ingest", "web", "worker", "beat"]
    assert [c.name for c in Command().children({**OPTIONS, "only": "edge,ingest"})] == [
        "edge", "ingest"]


def test_embedded_redis_keeps_an_aof_with_the_fsync_policy_asked(monkeypatch, tmp_path):
    from config.embedded_redis import EmbeddedRedis

    def option(argv, name):
        return argv[argv.index(name) + 1]

    monkeypatch.delenv("EMBEDDED_REDIS_FSYNC", raising=False)
    argv = EmbeddedRedis(tmp_path, persistent=True).argv()
    assert option(argv, "--appendonly") == "yes"
    assert option(argv, "--appendfsync") == "everysec"
    monkeypatch.setenv("EMBEDDED_REDIS_FSYNC", "Always")
    assert option(EmbeddedRedis(tmp_path).argv(), "--appendfsync") == "always"
    assert option(EmbeddedRedis(tmp_path, persistent=False).argv(), "--appendonly") == "no"
    monkeypatch.setenv("EMBEDDED_REDIS_FSYNC", "sometimes")
    with pytest.raises(ValueError, match="EMBEDDED_REDIS_FSYNC must be one of always, "
                                         "everysec, no, not 'sometimes'"):
        EmbeddedRedis(tmp_path)


def test_children_know_their_role_and_restarts():
    env = child_env("ingest", 3)
    assert env["THINGLINKS_ROLE"] == "ingest"
    assert env["THINGLINKS_RESTARTS"] == "3"
    assert "THINGLINKS_ROLE" not in child_env()


def test_exit_status_names_the_signal():
    from webapp.devices.management.commands.runplatform import describe_exit

    assert describe_exit(-9) == "-9 (SIGKILL)"
    assert describe_exit(1) == "1"
    assert describe_exit(0) == "0"
