"""Connected clients follow the registry: when webapp changes a device, a product or an API
key, the connections it concerns get their new ACL, or are ended (0x98 Administrative
action) when they may no longer be connected; an application client also ends when its key
expires."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.auth import refusal
from edge.bus.registry import AppRecord, DeviceRecord, ProductRecord
from edge.clock import now_ms
from edge.deferreds import then
from edge.mqtt.broker import Broker
from edge.mqtt.errors import Reason
from edge.mqtt.policy import Client

from .acl import AppAcl, app_of, device_of
from .auth import Authenticator
from .endpoints import Endpoints
from .interfaces import Clock, Directory

log = Logger(namespace="edge")

# The offline reason of a device webapp disconnected on purpose (``kick:`` on tl:registry).
KICKED = "kicked"


class RegistryFollower:
    def __init__(
        self,
        clock: Clock,
        directory: Directory,
        auth: Authenticator,
        endpoints: Endpoints | None = None,
    ) -> None:
        self.clock = clock
        self.directory = directory
        self.auth = auth
        # Devices served by the other transports: dropped like a kicked MQTT connection.
        self.endpoints = endpoints
        self.broker: Broker | None = None
        # Connected application clients → the call that ends them when their key expires.
        self.apps: dict[Client, Any] = {}

    def app_connected(self, connection: Client, app: AppAcl) -> None:
        """Follow an application client until its key expires."""
        expires_ms = app.app.expires_ms
        call = None
        if expires_ms is not None:
            delay = max(expires_ms - now_ms(self.clock.seconds), 0) / 1000
            call = self.clock.callLater(delay, self._app_expired, connection)
        self.apps[connection] = call

    def app_disconnected(self, connection: Client) -> None:
        call = self.apps.pop(connection, None)
        if call is not None and call.active():
            call.cancel()

    def changed(self, kind: str, identifier: str) -> None:
        """A device, product or API key changed in webapp: connected devices it concerns get
        their new ACL; a device that was locked or deleted, whose product was disabled or
        whose credentials changed, is disconnected (0x98); so is an application client whose
        key was revoked or changed, or that follows a device which left its user's scope."""
        if kind == "kick":
            self.kick(identifier)
            return
        if self.endpoints is not None:
            self._recheck_endpoints(kind, identifier)
        broker = self.broker
        if broker is None:
            return
        if kind == "dev":
            connection = broker.by_identity.get(identifier)
            if connection is not None:
                self._refresh(connection)
            for app_connection in list(self.apps):
                app = app_of(app_connection)
                if app is not None and identifier in app.devices:
                    self._recheck_app_device(app_connection, app, identifier)
        elif kind == "prod":
            for connection in list(broker.by_identity.values()):
                acl = device_of(connection)
                if acl is not None and acl.device.product == identifier:
                    self._refresh(connection)
        elif kind == "app":
            for app_connection in list(self.apps):
                app = app_of(app_connection)
                if app is not None and app.app.key_id == identifier:
                    self._recheck_app(app_connection, app)

    def kick(self, identifier: str) -> None:
        """Webapp asked that the device's connections end now (the console's "disconnect"):
        its MQTT connection is closed (0x98) and a device of another transport dropped,
        both going offline with reason ``kicked``. It may connect again at once."""
        text = f"device {identifier} was disconnected by the platform"
        if self.endpoints is not None and identifier in self.endpoints:
            log.info("{device} dropped: {text}", device=identifier, text=text)
            self.endpoints.drop(identifier, KICKED)
        broker = self.broker
        connection = broker.by_identity.get(identifier) if broker is not None else None
        if connection is not None:
            log.info("{device} disconnected: {text}", device=identifier, text=text)
            connection.close(Reason.ADMINISTRATIVE_ACTION, KICKED, text)
            assert broker is not None
            broker.flush()

    def _recheck_endpoints(self, kind: str, identifier: str) -> None:
        """A device of another transport that is now locked, deleted or in a disabled
        product is dropped (its lease ends and it goes offline with that reason)."""
        endpoints = self.endpoints
        assert endpoints is not None
        if kind == "dev":
            devices = [identifier] if identifier in endpoints else []
        elif kind == "prod":
            devices = list(endpoints.attached)
        else:
            return
        for device in devices:
            self._recheck_endpoint(endpoints, device, kind == "dev")

    def _recheck_endpoint(self, endpoints: Endpoints, device: str, named: bool) -> None:
        def settle(record: DeviceRecord, product: ProductRecord | None) -> None:
            attachment = endpoints.attached.get(device)
            if attachment is None:
                return
            refused = refusal(record, product, attachment.transport)
            if refused is not None:
                log.info("{device} dropped: {text}", device=device, text=refused[2])
                endpoints.drop(device, refused[1])

        def with_product(record: DeviceRecord | None) -> Any:
            if record is None:
                if named:
                    endpoints.drop(device, "deleted")
                return None
            product = self.directory.product(record.product) if record.product else None
            return then(product, lambda prod: settle(record, prod))

        _warn_failed(then(self.directory.device(device), with_product))

    def _end_app(self, connection: Client, text: str) -> None:
        log.info(
            "application client {client} disconnected: {text}",
            client=connection.client_id,
            text=text,
        )
        connection.close(Reason.ADMINISTRATIVE_ACTION, "revoked", text)
        if self.broker is not None:
            self.broker.flush()

    def _recheck_app(self, connection: Client, acl: AppAcl) -> None:
        """The key was republished or deleted: its client goes unless nothing changed."""
        key_id = acl.app.key_id

        def settle(record: AppRecord | None) -> None:
            if record is None:
                self._end_app(connection, f"API key {key_id} was revoked")
            elif record != acl.app:
                self._end_app(connection, f"API key {key_id} changed")

        _warn_failed(then(self.directory.app(key_id), settle))

    def _recheck_app_device(self, connection: Client, acl: AppAcl, device: str) -> None:
        def settle(record: DeviceRecord | None) -> None:
            if record is None or not acl.app.reaches(record):
                self._end_app(connection, f"device {device} left the scope of {acl.app.user}")

        _warn_failed(then(self.directory.device(device), settle))

    def _app_expired(self, connection: Client) -> None:
        self.apps.pop(connection, None)
        acl = app_of(connection)
        if acl is not None:
            self._end_app(connection, f"API key {acl.app.key_id} expired")

    def _refresh(self, connection: Client) -> None:
        identity = connection.identity
        assert identity is not None

        def kick(why: str, text: str) -> None:
            log.info("{device} disconnected: {text}", device=identity, text=text)
            connection.close(Reason.ADMINISTRATIVE_ACTION, why, text)
            if self.broker is not None:
                self.broker.flush()

        def settle(record: DeviceRecord, product: ProductRecord | None) -> None:
            refused = refusal(record, product, "mqtt")
            if refused is not None:
                kick(refused[1], refused[2])
            elif not self.auth.credentials_hold(connection, record):
                kick("credentials_changed", f"the credentials of device {identity} changed")
            elif connection.identity == record.identifier:
                connection.acl = self.auth.device_acl(record, product)

        def with_product(record: DeviceRecord | None) -> Any:
            if record is None:
                kick("deleted", f"device {identity} is deleted")
                return None
            product = self.directory.product(record.product) if record.product else None
            return then(product, lambda prod: settle(record, prod))

        _warn_failed(then(self.directory.device(identity), with_product))


def _warn_failed(result: Any) -> None:
    if isinstance(result, Deferred):
        result.addErrback(lambda f: log.warn("registry refresh failed: {e}", e=f.getErrorMessage()))
