"""Commands to devices (docs/devices.md, "Commands"; docs/protocol.md).

A command is validated against the product's thing model, stored, and — after commit — sent on
``/v1/devices/{id}/command`` through the edge node holding the device (a sub-device's command
travels on its gateway's topic, naming the sub-device in the body). The envelope's ``head.mid``
is the command's id; the device's ``commandResponse`` echoes it and completes the command.

Lifecycle: ``pending`` (stored; waits while the device is offline, until ``expires``) →
``sent`` (waits for the response until ``deadline``) → ``succeeded`` | ``failed`` |
``timeout``; a pending command can also be ``cancelled``. Every transition is a conditional
UPDATE on the current status, so concurrent senders (the API, the reconnect hook, the sweep)
never send a command twice or overwrite a final state.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from webapp.core.errors import Busy, Conflict, DomainError, NotFound
from webapp.core.redis import get_redis, keys
from webapp.core.types import Actor
from webapp.devices import downlink
from webapp.devices.choices import CommandSource, CommandStatus, DeviceStatus, NodeType
from webapp.devices.models import Device, DeviceCommand
from webapp.products.thingmodel import thing_model
from webapp.system import scope
from webapp.system.actors import recorded_user

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30
MAX_DELIVERY_ATTEMPTS = 5
MAX_TIMEOUT = 300
REPLY_KEY_TTL = 120
# One blocking read of a reply, well under the Redis client's socket timeout (5 s in
# redis-py): a read that outlasts it fails instead of returning empty.
REPLY_BLOCK_SECONDS = 2
OPEN = (CommandStatus.PENDING, CommandStatus.SENT)


def default_ttl() -> int:
    """Seconds a command waits for an offline device (`DEVICE_COMMAND_TTL`, default a day)."""
    return int(getattr(settings, "DEVICE_COMMAND_TTL", 86_400))


def carrier(device: Device) -> str:
    """The device whose connection carries messages to ``device`` (its gateway for a sub)."""
    if device.node_type == NodeType.SUB and device.gateway_id is not None:
        return device.gateway.identifier  # type: ignore[union-attr]
    return device.identifier


def _problems_error(problems: list[Any]) -> DomainError:
    detail = problems[0].reason if len(problems) == 1 else _(
        "{count} problems; first: {reason}").format(count=len(problems),
                                                   reason=problems[0].reason)
    return DomainError(detail, code="invalid_command",
                       extra={"errors": [p.as_dict() for p in problems]})


def _in_scope(acting_user: Actor, device: Device) -> bool:
    """May ``acting_user`` command ``device`` (the platform itself, None, may command any)?"""
    if acting_user is None or scope.user_scope(acting_user).everything:
        return True
    return scope.restrict(Device.objects.filter(pk=device.pk), acting_user).exists()


def send_command(*, acting_user: Actor, device: Device | str, service: str, command: str,
                 params: dict[str, Any] | None = None, timeout: int | None = None,
                 ttl: int | None = None, source: str = CommandSource.API) -> DeviceCommand:
    """Validate and queue a command; it is sent after commit if the device is online.

    ``device`` is a device or its identifier. A user reaches only the devices of their data
    scope: any other is answered as unknown (the platform itself, None, reaches every
    device). Raises ``DomainError`` with code ``invalid_command`` (and the per-parameter
    ``errors``) when the thing model refuses it.
    """
    found = Device.objects.select_related("product", "gateway").filter(
        identifier=device).first() if isinstance(device, str) else device
    if found is None or not _in_scope(acting_user, found):
        raise NotFound(_("device {identifier} does not exist").format(
            identifier=device if isinstance(device, str) else device.identifier),
            code="unknown_device")
    device = found
    if device.status == DeviceStatus.LOCKED:
        raise Conflict(_("device {identifier} is locked").format(identifier=device.identifier),
                       code="device_locked")
    timeout = DEFAULT_TIMEOUT if timeout is None else int(timeout)
    if not 1 <= timeout <= MAX_TIMEOUT:
        raise DomainError(_("timeout must be between 1 and {max} seconds").format(
            max=MAX_TIMEOUT), code="invalid_timeout")
    ttl = default_ttl() if ttl is None else int(ttl)
    if ttl < 0:
        raise DomainError(_("ttl cannot be negative"), code="invalid_ttl")
    values, problems = thing_model(device.product).validate_command_params(
        service, command, params)
    if problems:
        raise _problems_error(problems)
    now = timezone.now()
    with transaction.atomic():
        record = DeviceCommand.objects.create(
            device=device, service=service, command=command, params=values,
            timeout=timeout, expires=now + timedelta(seconds=ttl), source=source,
            created_by=recorded_user(acting_user))
        pk = record.pk
        transaction.on_commit(lambda: dispatch_command(pk))
    return record


def _body(record: DeviceCommand) -> dict[str, Any]:
    device = record.device
    return {
        "deviceIdentification": device.identifier,
        "productIdentification": device.product.identifier,
        "msgType": "cloudReq",
        "serviceCode": record.service,
        "cmd": record.command,
        "params": record.params,
    }


def dispatch_command(command_id: int) -> bool:
    """Send a pending command if its device is reachable; returns whether it was sent."""
    record = DeviceCommand.objects.select_related(
        "device__product", "device__gateway").filter(pk=command_id).first()
    if record is None or record.status != CommandStatus.PENDING:
        return False
    via = carrier(record.device)
    node = downlink.route(via)
    if node is None:
        return False
    now = timezone.now()
    if record.expires <= now:
        return False  # the sweep times it out
    claimed = DeviceCommand.objects.filter(pk=record.pk, status=CommandStatus.PENDING).update(
        status=CommandStatus.SENT, sent=now, deadline=now + timedelta(seconds=record.timeout),
        attempts=F("attempts") + 1)
    if not claimed:
        return False
    try:
        downlink.publish(node, downlink.topic(via, "command"),
                         downlink.envelope(_body(record), record.pk),
                         device=record.device.identifier, qos=1, mid=record.pk)
    except Exception:
        # Not sent after all: back to pending, the next reconnect or retry sends it.
        DeviceCommand.objects.filter(pk=record.pk, status=CommandStatus.SENT).update(
            status=CommandStatus.PENDING, sent=None, deadline=None)
        raise
    return True


def dispatch_pending(identifiers: Iterable[str]) -> int:
    """Send the waiting commands of devices that came online (and of their sub-devices)."""
    ids = list(identifiers)
    if not ids:
        return 0
    waiting = DeviceCommand.objects.filter(
        Q(device__identifier__in=ids) | Q(device__gateway__identifier__in=ids),
        status=CommandStatus.PENDING, expires__gt=timezone.now(),
    ).order_by("created", "id").values_list("pk", flat=True)
    sent = 0
    for pk in list(waiting):
        try:
            sent += dispatch_command(pk)
        except Exception:
            log.exception("command %s could not be sent; it stays pending", pk)
    return sent


def undelivered(command_ids: Iterable[int]) -> int:
    """The edge found no subscriber for these commands (the device had not subscribed to its
    command topic yet): back to pending, to be sent again by :func:`retry_pending`."""
    ids = list(command_ids)
    if not ids:
        return 0
    return DeviceCommand.objects.filter(pk__in=ids, status=CommandStatus.SENT).update(
        status=CommandStatus.PENDING, sent=None, deadline=None)


def delivered(sent_at: dict[int, datetime]) -> int:
    """Commands the edge kept for a device until it asked (a UDP device in queue mode) reached
    it at the given times: the wait for each response starts then. A command no longer sent
    (answered, timed out) is left as it is."""
    done = 0
    for record in DeviceCommand.objects.filter(pk__in=list(sent_at), status=CommandStatus.SENT):
        at = sent_at[record.pk]
        done += DeviceCommand.objects.filter(pk=record.pk, status=CommandStatus.SENT).update(
            sent=at, deadline=at + timedelta(seconds=record.timeout))
    return done


def retry_pending() -> int:
    """Send the pending commands of devices that are online now (a command created during a
    reconnect, or one the device was not yet subscribed for), a few attempts each."""
    waiting = list(DeviceCommand.objects.filter(
        status=CommandStatus.PENDING, expires__gt=timezone.now(),
        attempts__lt=MAX_DELIVERY_ATTEMPTS,
    ).select_related("device__gateway").order_by("created", "id")[:5000])
    if not waiting:
        return 0
    online = downlink.routes(sorted({carrier(c.device) for c in waiting}))
    sent = 0
    for record in waiting:
        if carrier(record.device) in online:
            try:
                sent += dispatch_command(record.pk)
            except Exception:
                log.exception("command %s could not be sent; it stays pending", record.pk)
    return sent


def _error_code(value: Any) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def _notify(command_ids: Iterable[int], status: str) -> None:
    k = keys()
    pipe = get_redis().pipeline(transaction=False)
    for pk in command_ids:
        pipe.lpush(k.command_reply(pk), status)
        pipe.expire(k.command_reply(pk), REPLY_KEY_TTL)
    pipe.execute()


def complete_command(*, device: str, mid: Any, service: str | None = None,
                     command: str | None = None, err: Any = 0,
                     params: dict[str, Any] | None = None, ts: int | None = None
                     ) -> DeviceCommand | None:
    """Apply a device's ``commandResponse``: the open command with id ``mid`` of ``device`` (or
    of one of its sub-devices, when ``device`` is a gateway) completes. Without a mid, the
    oldest sent command of the device with the same service and command is taken.

    Idempotent: a response for a command that is already final changes nothing. Returns the
    completed command, or None when no open command matches.
    """
    mine = Q(device__identifier=device) | Q(device__gateway__identifier=device)
    candidates = DeviceCommand.objects.select_related("device__product").filter(
        mine, status__in=OPEN)
    record: DeviceCommand | None
    if isinstance(mid, int | str) and str(mid).isdigit():
        record = candidates.filter(pk=int(mid)).first()
    else:
        record = candidates.filter(status=CommandStatus.SENT, service=service or "",
                                   command=command or "").order_by("sent", "id").first()
    if record is None:
        return None
    response = params if isinstance(params, dict) else {}
    code = _error_code(err)
    status = CommandStatus.SUCCEEDED if code == 0 else CommandStatus.FAILED
    note = ""
    _values, problems = thing_model(record.device.product).validate_command_params(
        record.service, record.command, response, response=True)
    if problems:
        note = _("the response does not match the thing model: {reason}").format(
            reason="; ".join(p.reason for p in problems))
    moment = (datetime.fromtimestamp(ts / 1000, tz=UTC) if isinstance(ts, int)
              else timezone.now())
    updated = DeviceCommand.objects.filter(pk=record.pk, status__in=OPEN).update(
        status=status, response=response, err_code=code, error=note, completed=moment)
    if not updated:
        return None
    _notify([record.pk], status)
    record.refresh_from_db()
    return record


def expire_commands() -> int:
    """Time out sent commands past their deadline and waiting ones past their TTL."""
    now = timezone.now()
    expired = 0
    late = list(DeviceCommand.objects.filter(status=CommandStatus.SENT, deadline__lt=now)
                .values_list("pk", flat=True)[:5000])
    if late:
        expired += DeviceCommand.objects.filter(pk__in=late, status=CommandStatus.SENT).update(
            status=CommandStatus.TIMEOUT, completed=now,
            error=_("the device did not respond in time"))
    stale = list(DeviceCommand.objects.filter(status=CommandStatus.PENDING, expires__lt=now)
                 .values_list("pk", flat=True)[:5000])
    if stale:
        expired += DeviceCommand.objects.filter(pk__in=stale,
                                                status=CommandStatus.PENDING).update(
            status=CommandStatus.TIMEOUT, completed=now,
            error=_("the device did not come online before the command expired"))
    if late or stale:
        _notify([*late, *stale], CommandStatus.TIMEOUT)
    return expired


def sync_max_wait() -> int:
    """The longest a synchronous call waits (`COMMAND_SYNC_MAX_WAIT`, 30 s by default)."""
    return int(getattr(settings, "COMMAND_SYNC_MAX_WAIT", 30))


def sync_max_concurrent() -> int:
    """How many synchronous calls may wait at once in one web process
    (`COMMAND_SYNC_MAX_CONCURRENT`, 16 by default)."""
    return int(getattr(settings, "COMMAND_SYNC_MAX_CONCURRENT", 16))


class _WaitSlots:
    """The synchronous waits of this process: each holds a thread, so there are few."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.taken = 0

    @contextmanager
    def take(self) -> Iterator[None]:
        limit = sync_max_concurrent()
        with self._lock:
            if self.taken >= limit:
                raise Busy(_("{count} synchronous commands are already waiting "
                             "(COMMAND_SYNC_MAX_CONCURRENT); send without sync and read the "
                             "command later, or retry").format(count=self.taken),
                           code="too_many_waits")
            self.taken += 1
        try:
            yield
        finally:
            with self._lock:
                self.taken -= 1


_wait_slots = _WaitSlots()


def sync_wait_slot() -> AbstractContextManager[None]:
    """A slot for one synchronous wait; raises `Busy` (429) when all are taken. Take it
    before creating the command, so that a refused call leaves nothing behind."""
    return _wait_slots.take()


def _release_database() -> None:
    """Give the database connection back while blocking on Redis (waiting calls must not hold
    the database's connections); the next query opens one again."""
    if not connection.in_atomic_block:
        connection.close()


def wait_for_command(record: DeviceCommand, timeout: float) -> DeviceCommand:
    """Block until the command completes or ``timeout`` seconds pass (synchronous API calls),
    at most `sync_max_wait()` seconds, without holding a database connection meanwhile.

    A sent command still unanswered after its whole ``timeout`` times out at once rather than
    at the next sweep: the caller asked to wait exactly that long. A wait cut short by the cap
    returns the command still open; its own deadline applies.
    """
    wait = min(float(timeout), float(sync_max_wait()))
    deadline = time.monotonic() + wait
    key = keys().command_reply(record.pk)
    redis = get_redis()
    record.refresh_from_db()
    while record.is_open:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        _release_database()
        if redis.blpop([key], timeout=max(1, min(math.ceil(remaining),
                                                  REPLY_BLOCK_SECONDS))) is not None:
            record.refresh_from_db()
    record.refresh_from_db()
    if record.status == CommandStatus.SENT and wait >= timeout:
        if DeviceCommand.objects.filter(pk=record.pk, status=CommandStatus.SENT).update(
                status=CommandStatus.TIMEOUT, completed=timezone.now(),
                error=_("the device did not respond in time")):
            _notify([record.pk], CommandStatus.TIMEOUT)
        record.refresh_from_db()
    return record


@transaction.atomic
def cancel_command(*, record: DeviceCommand) -> DeviceCommand:
    """Cancel a command that is still waiting for its device."""
    if not DeviceCommand.objects.filter(pk=record.pk, status=CommandStatus.PENDING).update(
            status=CommandStatus.CANCELLED, completed=timezone.now()):
        raise Conflict(_("only a pending command can be cancelled"), code="not_pending")
    record.refresh_from_db()
    transaction.on_commit(lambda: _notify([record.pk], CommandStatus.CANCELLED))
    return record
