"""Devices this node reaches through a transport other than MQTT (HTTP, CoAP, raw TCP, UDP).

An MQTT device gets its commands because it subscribed to ``/v1/devices/{id}/command``: the
downlink publishes through the broker. The other transports have no subscription, so each
device they serve is *attached* here while it is reachable, and the downlink hands a message
for it to its endpoint instead of the broker:

- a **stream** endpoint (a raw TCP connection after its login) writes the message at once;
- a **mailbox** (HTTP long-poll, CoAP observe, UDP in queue mode) keeps it until the device
  asks: a waiting poll gets it at once, else it waits, bounded in count and age, for the next
  poll or datagram.

A device that has no long-lived connection is *online* while it keeps talking: each request
renews a lease (``EDGE_DEVICE_LEASE`` seconds), and when the lease runs out the device goes
offline (reason ``idle``) and its endpoint is detached. Presence (``status`` events and the
``tl:route`` entry that tells the platform which node to send its commands to) follows the
lease exactly as it follows an MQTT connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

from edge.mqtt.session import Clock

from .presence import Presence


@dataclass(frozen=True, slots=True)
class Downlink:
    """One message for a device: the topic suffix after ``/v1/devices/{id}/`` (``command``,
    ``shadow/getResponse``, ``topo/addResponse``…) and its payload, as the MQTT device would
    have received it."""

    suffix: str
    payload: bytes


class Queued(str):
    """What an endpoint returns for a message it keeps until the device asks (a mailbox): no
    failure, so the message log says it was queued and the command stays sent."""

    __slots__ = ()


QUEUED = Queued("queued until the device asks for it")


class Endpoint(Protocol):
    """Where a device's downlink goes on this node."""

    def deliver(self, message: Downlink) -> str | None:
        """Send or keep ``message``; None when it was taken, :data:`QUEUED` when it waits for
        the device to ask, else why not (the message log says so)."""
        ...


class Mailbox:
    """Downlink kept for a device that asks for it (long-poll, observe, queue mode).

    At most ``limit`` messages wait, none longer than ``ttl`` seconds: a device that stopped
    polling does not make the edge hold its commands for ever (the platform keeps commands of
    offline devices itself and sends them again when the device comes back).
    """

    def __init__(self, clock: Clock, limit: int, ttl: float) -> None:
        self.clock = clock
        self.limit = limit
        self.ttl = ttl
        self.queue: deque[tuple[float, Downlink]] = deque()
        self.waiters: deque[Deferred[Downlink | None]] = deque()
        self.listeners: list[Callable[[Downlink], bool]] = []
        self.closers: list[Callable[[], None]] = []

    def deliver(self, message: Downlink) -> str | None:
        for listener in list(self.listeners):
            if listener(message):
                return None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.called:
                waiter.callback(message)
                return None
        self._expire()
        if len(self.queue) >= self.limit:
            return "mailbox full"
        self.queue.append((self.clock.seconds(), message))
        return QUEUED

    def take(self, suffix: str | None = None) -> Downlink | None:
        """The oldest waiting message (of topic suffix ``suffix`` when given), or None."""
        self._expire()
        for index, (_, message) in enumerate(self.queue):
            if suffix is None or message.suffix == suffix:
                del self.queue[index]
                return message
        return None

    def take_all(self) -> list[Downlink]:
        self._expire()
        taken = [message for _, message in self.queue]
        self.queue.clear()
        return taken

    def wait(self, timeout: float) -> Deferred[Downlink | None]:
        """The next message: at once when one waits, else the first to come within
        ``timeout`` seconds; None when none came. Cancelling the Deferred gives up waiting."""
        message = self.take()
        if message is not None:
            return _fired(message)
        waiter: Deferred[Downlink | None] = Deferred(lambda d: self._forget(d))
        self.waiters.append(waiter)
        call = self.clock.callLater(timeout, self._timed_out, waiter)

        def done(result: Downlink | None) -> Downlink | None:
            if call.active():
                call.cancel()
            return result

        waiter.addBoth(done)
        return waiter

    def listen(self, listener: Callable[[Downlink], bool]) -> Callable[[], None]:
        """Call ``listener`` with each message before it would be queued (a CoAP observation
        sends it as a notification); it returns whether it took the message. Returns the
        function that stops listening."""
        self.listeners.append(listener)
        for message in self.take_all():
            if not listener(message):
                self.queue.append((self.clock.seconds(), message))

        def stop() -> None:
            if listener in self.listeners:
                self.listeners.remove(listener)

        return stop

    def on_close(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the device goes away (its lease ended, the platform dropped
        it): a CoAP observation then ends. Returns the function that cancels it."""
        self.closers.append(callback)

        def cancel() -> None:
            if callback in self.closers:
                self.closers.remove(callback)

        return cancel

    def close(self) -> None:
        """The device went away: pending polls end with None, listeners are told."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.called:
                waiter.callback(None)
        self.listeners.clear()
        closers, self.closers = self.closers, []
        for closed in closers:
            closed()

    def _timed_out(self, waiter: Deferred[Downlink | None]) -> None:
        self._forget(waiter)
        if not waiter.called:
            waiter.callback(None)

    def _forget(self, waiter: Deferred[Downlink | None]) -> None:
        with suppress(ValueError):
            self.waiters.remove(waiter)

    def _expire(self) -> None:
        oldest = self.clock.seconds() - self.ttl
        while self.queue and self.queue[0][0] < oldest:
            self.queue.popleft()


def _fired(message: Downlink) -> Deferred[Downlink | None]:
    done: Deferred[Downlink | None] = Deferred()
    done.callback(message)
    return done


class Timer(Protocol):
    """The part of ``IDelayedCall`` a lease uses."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...

    def reset(self, seconds: float) -> None: ...


@dataclass(slots=True)
class Attachment:
    endpoint: Endpoint
    peer: str
    transport: str
    # The lease timer of a device without a connection (None: a connection holds it).
    lease: Timer | None = None


class Endpoints:
    """The non-MQTT devices of this node, their endpoints and their presence."""

    def __init__(
        self,
        clock: Clock,
        presence: Presence,
        lease: float = 300.0,
        mailbox_limit: int = 16,
        mailbox_ttl: float = 300.0,
    ) -> None:
        self.clock = clock
        self.presence = presence
        self.lease = lease
        self.mailbox_limit = mailbox_limit
        self.mailbox_ttl = mailbox_ttl
        self.attached: dict[str, Attachment] = {}

    def __contains__(self, device: object) -> bool:
        return device in self.attached

    def get(self, device: str) -> Endpoint | None:
        attachment = self.attached.get(device)
        return attachment.endpoint if attachment is not None else None

    def deliver(self, device: str, message: Downlink) -> str | None:
        """Hand ``message`` to the device's endpoint: None when taken, :data:`QUEUED` when
        kept for the device's next request, else why not."""
        attachment = self.attached.get(device)
        if attachment is None:
            return "not attached"
        return attachment.endpoint.deliver(message)

    def connect(self, device: str, endpoint: Endpoint, peer: str, transport: str) -> None:
        """A connection (raw TCP after its login) now reaches ``device``; a previous endpoint
        of the device on this node is replaced (the newest connection wins, as on MQTT)."""
        previous = self.attached.pop(device, None)
        if previous is not None:
            self._stop_lease(previous)
            _close(previous.endpoint)
        else:
            self.presence.online(device, peer, transport)
        self.attached[device] = Attachment(endpoint, peer, transport)

    def disconnect(self, device: str, endpoint: Endpoint, reason: str) -> None:
        """The connection that held ``device`` ended (nothing when a newer one replaced it)."""
        attachment = self.attached.get(device)
        if attachment is None or attachment.endpoint is not endpoint:
            return
        del self.attached[device]
        self.presence.offline(device, attachment.peer, reason, False, attachment.transport)

    def touch(self, device: str, peer: str, transport: str) -> Mailbox:
        """A device without a connection (HTTP, CoAP, UDP) was heard from: it is online for
        another lease, and its mailbox is returned (created on first contact)."""
        attachment = self.attached.get(device)
        if attachment is not None and isinstance(attachment.endpoint, Mailbox):
            attachment.peer = peer
            attachment.transport = transport
            if attachment.lease is not None and attachment.lease.active():
                attachment.lease.reset(self.lease)
            return attachment.endpoint
        if attachment is not None:
            # A stream connection held it: that connection is replaced by the newer contact.
            del self.attached[device]
            _close(attachment.endpoint)
        else:
            self.presence.online(device, peer, transport)
        mailbox = Mailbox(self.clock, self.mailbox_limit, self.mailbox_ttl)
        attachment = Attachment(mailbox, peer, transport)
        attachment.lease = self.clock.callLater(self.lease, self._expired, device, mailbox)
        self.attached[device] = attachment
        return mailbox

    def drop(self, device: str, reason: str) -> None:
        """The platform ended the device (locked, deleted, secret changed): forget it now."""
        attachment = self.attached.pop(device, None)
        if attachment is None:
            return
        self._stop_lease(attachment)
        _close(attachment.endpoint)
        self.presence.offline(device, attachment.peer, reason, False, attachment.transport)

    def stop(self) -> None:
        """The node shuts down: every attached device goes offline (reason ``shutdown``)."""
        for device in list(self.attached):
            self.drop(device, "shutdown")

    def _expired(self, device: str, mailbox: Mailbox) -> None:
        attachment = self.attached.get(device)
        if attachment is None or attachment.endpoint is not mailbox:
            return
        attachment.lease = None
        self.drop(device, "idle")

    @staticmethod
    def _stop_lease(attachment: Attachment) -> None:
        if attachment.lease is not None and attachment.lease.active():
            attachment.lease.cancel()
        attachment.lease = None


def _close(endpoint: Endpoint) -> None:
    close = getattr(endpoint, "close", None)
    if callable(close):
        close()


__all__ = ["QUEUED", "Attachment", "Downlink", "Endpoint", "Endpoints", "Mailbox", "Queued"]
