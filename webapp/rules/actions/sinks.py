"""Sinks: saved with their settings checked and credentials sealed, deleted; the outcome of
each delivery (health, counters) and the messages they could not deliver (dead letters)."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from edge.crypto import encrypt_secret
from webapp.core.types import Actor
from webapp.rules.actions.ownership import set_owner
from webapp.rules.actions.validation import check_sink_scope
from webapp.rules.choices import SinkHealth
from webapp.rules.models import DeadLetter, Sink
from webapp.rules.secrets import MASK, sink_credentials
from webapp.rules.sinks import check_sink


def save_sink(*, acting_user: Actor, sink: Sink | None, data: dict[str, Any],
              credentials: dict[str, Any] | None = None) -> Sink:
    """Create or change a sink: its topic within the user's scope, its credentials sealed
    (a masked one kept, an empty one removed), its settings checked."""
    if sink is None:
        sink = Sink()
        set_owner(sink, acting_user, data)
    before = (sink.sink_type, sink.config) if sink.pk else None
    for name, value in data.items():
        setattr(sink, name, value)
    check_sink_scope(sink.sink_type, sink.config, acting_user, before)
    if credentials is not None:
        merged = sink_credentials(sink) if sink.pk else {}
        for key, value in credentials.items():
            if value == MASK:
                continue
            if value in (None, ""):
                merged.pop(key, None)
            else:
                merged[key] = value
        sink.credentials_encrypted = encrypt_secret(json.dumps(merged)) if merged else ""
    # The destination is checked when it is new (disabling an old sink is never refused);
    # every connection checks it again.
    check_sink(sink, destination=before != (sink.sink_type, sink.config))
    sink.save()
    return sink


@transaction.atomic
def delete_sink(*, sink: Sink) -> None:
    sink.delete()


def record_sink_result(sink: Sink, *, ok: bool, error: str = "", count: int = 1) -> None:
    if ok:
        Sink.objects.filter(pk=sink.pk).update(
            health=SinkHealth.HEALTHY, failures=0, last_success=timezone.now(),
            delivered=F("delivered") + count)
    else:
        Sink.objects.filter(pk=sink.pk).update(
            health=SinkHealth.FAILING, failures=F("failures") + 1, last_error=error[:2000])


def record_dead_letter(*, sink: Sink, rule_id: int | None, message: dict[str, Any],
                       payload: str, error: str, attempts: int) -> DeadLetter:
    return DeadLetter.objects.create(sink=sink, rule_id=rule_id, message=message,
                                     payload=payload[:1_000_000], error=error[:2000],
                                     attempts=attempts)


@transaction.atomic
def mark_redelivered(*, letter: DeadLetter) -> DeadLetter:
    letter.redelivered = True
    letter.save(update_fields=["redelivered"])
    return letter
