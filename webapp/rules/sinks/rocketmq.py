"""RocketMQ sink over the HTTP protocol of RocketMQ's HTTP access point (the protocol of the
`mq-http-sdk` clients): `POST {endpoint}/topics/{topic}/messages[?ns={instance}]` with an XML
`<Message>` body, signed `Authorization: MQ {access_key}:{base64 HMAC-SHA1}` over
`POST\\n{md5}\\n{content-type}\\n{date}\\nx-mq-version:2015-06-06\\n{resource}`.

No RocketMQ server runs on the development machine: the request is unit-tested, and the
integration test runs when ROCKETMQ_URL is set."""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any
from xml.sax.saxutils import escape

from webapp.core import outbound
from webapp.rules.notify import DeliveryError, HttpRequest, send_http
from webapp.rules.sinks.base import Driver, Outgoing, SinkError, render

MQ_VERSION = "2015-06-06"
CONTENT_TYPE = "text/xml;charset=UTF-8"


def rocketmq_request(config: Mapping[str, Any], credentials: Mapping[str, Any],
                     outgoing: Outgoing, *, date: str | None = None) -> HttpRequest:
    topic = render(config, "topic", outgoing.env)
    tag = render(config, "tag", outgoing.env)
    keys = render(config, "keys", outgoing.env)
    resource = f"/topics/{urllib.parse.quote(topic, safe='')}/messages"
    if config.get("instance_id"):
        resource += f"?ns={urllib.parse.quote(str(config['instance_id']), safe='')}"
    properties = f"KEYS:{keys}|" if keys else ""
    body = ('<?xml version="1.0" encoding="UTF-8"?>'
            '<Message xmlns="http://mq.aliyuncs.com/doc/v1/">'
            f"<MessageBody>{escape(outgoing.text)}</MessageBody>"
            f"<MessageTag>{escape(tag)}</MessageTag>"
            f"<Properties>{escape(properties)}</Properties></Message>").encode()
    date = date or formatdate(usegmt=True)
    to_sign = f"POST\n\n{CONTENT_TYPE}\n{date}\nx-mq-version:{MQ_VERSION}\n{resource}"
    secret = str(credentials.get("secret_key") or "")
    signature = base64.b64encode(hmac.new(secret.encode(), to_sign.encode(),
                                          hashlib.sha1).digest()).decode()
    headers = {"Content-Type": CONTENT_TYPE, "Date": date, "x-mq-version": MQ_VERSION,
               "Host": urllib.parse.urlsplit(str(config["endpoint"])).netloc,
               "Authorization": f"MQ {config.get('access_key', '')}:{signature}"}
    return HttpRequest(str(config["endpoint"]).rstrip("/") + resource, headers, body)


class RocketMqDriver(Driver):
    def send(self, outgoing: Outgoing) -> None:
        try:
            send_http(rocketmq_request(self.config, self.credentials, outgoing))
        except DeliveryError as exc:
            raise SinkError(str(exc)) from exc

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> None:
        if not str(config.get("endpoint") or "").startswith(("http://", "https://")):
            raise ValueError("a RocketMQ sink has an http(s) 'endpoint' (its HTTP access point)")
        if not config.get("topic"):
            raise ValueError("a RocketMQ sink has a 'topic'")

    @classmethod
    def check_destination(cls, config: Mapping[str, Any]) -> None:
        outbound.check_url(str(config.get("endpoint")), schemes=("http", "https"))
