"""Notification channels: saved with their URL checked and a robot URL's credential sealed
apart from the URL, and deleted."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils.translation import gettext_lazy as _

from edge.crypto import encrypt_secret
from webapp.core.types import Actor
from webapp.rules import notify
from webapp.rules.actions.ownership import set_owner
from webapp.rules.actions.validation import ChannelInvalid, check_channel_destination
from webapp.rules.models import NotificationChannel
from webapp.rules.secrets import MASK, URL_TOKEN_KEY


def _masked_url(channel_type: str, config: Any) -> tuple[str, str]:
    url = config.get("url") if isinstance(config, dict) else None
    return notify.split_url_token(channel_type, url) if isinstance(url, str) else ("", "")


def channel_config(channel_type: str, config: Any, *, previous_type: str = "",
                   previous: Any = None) -> Any:
    """The config to store: its URL checked (webapp/core/outbound.py) when it is new or
    changed (disabling an old channel is never refused; every delivery checks it again),
    and a robot URL's credential moved out of `url` (masked there) into URL_TOKEN_KEY,
    encrypted. A masked URL keeps the stored credential only when the rest of the URL is
    unchanged: pointing it elsewhere takes the credential again."""
    if not isinstance(config, dict):
        return config
    previous = previous if isinstance(previous, dict) else {}
    masked, token = _masked_url(channel_type, config)
    before, plain_before = _masked_url(previous_type, previous)
    same_place = previous_type == channel_type and bool(masked) and masked == before
    if not same_place:
        check_channel_destination(channel_type, config)
    config = {k: v for k, v in config.items() if k != URL_TOKEN_KEY}
    if not token:
        return config
    config["url"] = masked
    if token != MASK:
        config[URL_TOKEN_KEY] = encrypt_secret(token)
    elif same_place and previous.get(URL_TOKEN_KEY):
        config[URL_TOKEN_KEY] = previous[URL_TOKEN_KEY]
    elif same_place and plain_before and plain_before != MASK:  # saved before L10's fix
        config[URL_TOKEN_KEY] = encrypt_secret(plain_before)
    else:
        raise ChannelInvalid(_("Give the robot URL with its token: a masked one keeps the "
                               "stored token only when the rest of the URL is unchanged."))
    return config


@transaction.atomic
def save_channel(*, acting_user: Actor, channel: NotificationChannel | None,
                 data: dict[str, Any], secret: str | None = None) -> NotificationChannel:
    relations = {k: data.pop(k) for k in ("users", "departments") if k in data}
    if channel is None:
        channel = NotificationChannel()
        set_owner(channel, acting_user, data)
    previous_type, previous_config = channel.channel_type, channel.config
    for name, value in data.items():
        setattr(channel, name, value)
    channel.config = channel_config(channel.channel_type, channel.config,
                                    previous_type=previous_type if channel.pk else "",
                                    previous=previous_config)
    if secret is not None and secret != MASK:
        channel.secret_encrypted = encrypt_secret(secret) if secret else ""
    channel.save()
    for name, value in relations.items():
        getattr(channel, name).set(value)
    return channel


@transaction.atomic
def delete_channel(*, channel: NotificationChannel) -> None:
    channel.delete()
