"""`manage.py runplatform` (make run): what it starts."""

import pytest

from webapp.core.management.commands.runplatform import Command

OPTIONS = {"web_host": "127.0.0.1", "web_port": 8000, "only": ""}


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
