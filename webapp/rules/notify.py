"""Notification channels: how each one's request is built, signed and sent.

Request building is separate from sending so that each vendor's documented body and signature
is unit-tested byte for byte:

- webhook: JSON body, headers `X-ThingLinks-Timestamp` (ms) and `X-ThingLinks-Signature:
  sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>` (verify by recomputing it);
- DingTalk robot: `msgtype` markdown/text; with a secret, `&timestamp=<ms>&sign=<urlencoded
  base64 HMAC-SHA256(secret, "<timestamp>\\n<secret>")>` on the URL; success is `errcode` 0;
- WeCom robot: `msgtype` markdown/text to the webhook URL (its `key` is the credential);
  success is `errcode` 0;
- Feishu robot: `msg_type` text with `timestamp` (s) and `sign` = base64 HMAC-SHA256 keyed by
  "<timestamp>\\n<secret>" over an empty message; success is `code` 0;
- email through Django's email backend; in-site messages as per-user notification records.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.mail import send_mail

from edge.clock import now_ms as clock_ms
from webapp.core import outbound
from webapp.core.outbound import HttpReply
from webapp.rules.choices import ChannelType

log = logging.getLogger(__name__)

TIMEOUT_S = 10
SIGNATURE_HEADER = "X-ThingLinks-Signature"
TIMESTAMP_HEADER = "X-ThingLinks-Timestamp"


class DeliveryError(Exception):
    """The receiver refused or could not be reached; the delivery is retried."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def hmac_signature(secret: str, timestamp_ms: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), str(timestamp_ms).encode() + b"." + body,
                      hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_request(url: str, secret: str, payload: Any, *, now_ms: int | None = None,
                    headers: dict[str, str] | None = None) -> HttpRequest:
    body = payload if isinstance(payload, bytes) else _json(payload)
    ts = now_ms if now_ms is not None else clock_ms()
    out = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(ts),
           "User-Agent": "ThingLinks-Rules/1"}
    out.update(headers or {})
    if secret:
        out[SIGNATURE_HEADER] = hmac_signature(secret, ts, body)
    return HttpRequest(url, out, body)


def dingtalk_request(url: str, secret: str, title: str, text: str, *,
                     config: dict[str, Any] | None = None,
                     now_ms: int | None = None) -> HttpRequest:
    config = config or {}
    ts = now_ms if now_ms is not None else clock_ms()
    if secret:
        digest = hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
        sign = urllib.parse.quote_plus(base64.b64encode(digest))
        url = f"{url}{'&' if '?' in url else '?'}timestamp={ts}&sign={sign}"
    at = {"atMobiles": list(config.get("at_mobiles", [])),
          "isAtAll": bool(config.get("at_all", False))}
    if config.get("msgtype") == "text":
        body = {"msgtype": "text", "text": {"content": f"{title}\n{text}"}, "at": at}
    else:
        body = {"msgtype": "markdown",
                "markdown": {"title": title, "text": f"### {title}\n\n{text}"}, "at": at}
    return HttpRequest(url, {"Content-Type": "application/json"}, _json(body))


def wecom_request(url: str, title: str, text: str, *,
                  config: dict[str, Any] | None = None) -> HttpRequest:
    config = config or {}
    if config.get("msgtype") == "text":
        body: dict[str, Any] = {"msgtype": "text", "text": {
            "content": f"{title}\n{text}",
            "mentioned_mobile_list": list(config.get("at_mobiles", []))}}
    else:
        body = {"msgtype": "markdown", "markdown": {"content": f"**{title}**\n{text}"}}
    return HttpRequest(url, {"Content-Type": "application/json"}, _json(body))


def feishu_sign(secret: str, timestamp_s: int) -> str:
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def feishu_request(url: str, secret: str, title: str, text: str, *,
                   now_s: int | None = None) -> HttpRequest:
    ts = now_s if now_s is not None else int(time.time())
    body: dict[str, Any] = {"msg_type": "text", "content": {"text": f"{title}\n{text}"}}
    if secret:
        body = {"timestamp": str(ts), "sign": feishu_sign(secret, ts), **body}
    return HttpRequest(url, {"Content-Type": "application/json"}, _json(body))


# Where a robot URL carries its credential (DingTalk `access_token`, WeCom `key`, the Feishu
# hook id): stored encrypted apart from the URL, which keeps URL_TOKEN_MASK in its place.
URL_TOKEN_MASK = "********"  # noqa: S105 (what is shown instead)
_URL_TOKENS: dict[str, re.Pattern[str]] = {
    ChannelType.DINGTALK: re.compile(r"[?&]access_token=([^&#]*)"),
    ChannelType.WECOM: re.compile(r"[?&]key=([^&#]*)"),
    ChannelType.FEISHU: re.compile(r"/hook/([^/?#]+)"),
}


def split_url_token(channel_type: str, url: str) -> tuple[str, str]:
    """(the URL with its credential masked, the credential); ("url", "") when it has none."""
    pattern = _URL_TOKENS.get(channel_type)
    found = pattern.search(url) if pattern is not None else None
    if found is None or not found.group(1):
        return url, ""
    start, end = found.span(1)
    return url[:start] + URL_TOKEN_MASK + url[end:], found.group(1)


def join_url_token(channel_type: str, masked_url: str, token: str) -> str:
    """The URL to send to: the stored credential back in the place of its mask."""
    pattern = _URL_TOKENS.get(channel_type)
    found = pattern.search(masked_url) if pattern is not None else None
    if found is None or found.group(1) != URL_TOKEN_MASK:
        return masked_url
    start, end = found.span(1)
    return masked_url[:start] + token + masked_url[end:]


def send_http(request: HttpRequest, *, check: str = "") -> HttpReply:
    """Send to a checked destination (webapp/core/outbound.py: no internal address, no
    redirect); any status other than 2xx, or a vendor error code in the body, raises. The
    error says what failed in generic words, never what the receiver answered."""
    host = urllib.parse.urlsplit(request.url).hostname
    try:
        response = outbound.http_request(request.method, request.url, body=request.body,
                                         headers=request.headers, timeout=TIMEOUT_S)
    except Exception as exc:
        reason = outbound.failure(exc)
        log.info("delivery to %s failed: %s (%s)", host, reason, type(exc).__name__)
        raise DeliveryError(reason) from exc
    if not 200 <= response.status < 300:
        log.info("delivery to %s: HTTP %s", host, response.status)
        raise DeliveryError(f"HTTP {response.status}")
    if check:
        try:
            reply = response.json()
        except ValueError as exc:
            raise DeliveryError("the reply is not JSON") from exc
        code = reply.get(check, reply.get("StatusCode", 0)) if isinstance(reply, dict) else 0
        if code not in (0, "0", None):
            log.info("delivery to %s: %s=%r %r", host, check, code,
                     str(reply.get("errmsg") or reply.get("msg"))[:200])
            shown = code if isinstance(code, int) else "?"
            raise DeliveryError(f"{check}={shown}")
    return response


def send_robot(channel_type: str, url: str, secret: str, title: str, body: str,
               config: dict[str, Any]) -> None:
    if channel_type == ChannelType.DINGTALK:
        send_http(dingtalk_request(url, secret, title, body, config=config), check="errcode")
    elif channel_type == ChannelType.WECOM:
        send_http(wecom_request(url, title, body, config=config), check="errcode")
    elif channel_type == ChannelType.FEISHU:
        send_http(feishu_request(url, secret, title, body), check="code")
    else:
        raise DeliveryError(f"not a robot channel: {channel_type}")


def send_email(subject: str, body: str, addresses: list[str]) -> None:
    if not addresses:
        raise DeliveryError("no recipient has an email address")
    try:
        send_mail(subject[:250], body, settings.DEFAULT_FROM_EMAIL, addresses,
                  fail_silently=False)
    except OSError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
