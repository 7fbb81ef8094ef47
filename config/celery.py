"""The Celery application (worker and beat): `celery -A config worker` / `celery -A config beat`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("thinglinks")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Task runs, failures and run time; each Celery process's metrics snapshot (docs/metrics.md).
import webapp.core.celery_metrics  # noqa: E402,F401
