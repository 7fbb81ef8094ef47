"""OTA campaign steps (Celery beat)."""

from __future__ import annotations

from celery import shared_task

from webapp.ota import actions


@shared_task(name="ota.advance")
def advance() -> dict[str, int]:
    """Send waiting upgrades, resend unanswered ones, fail silent devices, close campaigns."""
    return actions.advance()
