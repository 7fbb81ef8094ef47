"""The secrets of rule actions, notification channels and sinks: sealed (Fernet) when
stored, masked when shown, opened only where a delivery needs them.

A leaf: the actions seal them, the serializers and the admin mask them, the executors and
the sink drivers open them."""

from __future__ import annotations

import json
from typing import Any

from edge.crypto import decrypt_secret, encrypt_secret
from webapp.rules import notify
from webapp.rules.models import NotificationChannel, Sink

MASK = "********"
# The credential of a robot URL (notify.split_url_token), encrypted, in the channel's config.
URL_TOKEN_KEY = "url_token_encrypted"  # noqa: S105 (a key name)


# What names an action's destination, so that a masked secret follows its action when the
# list is reordered or an action before it is removed.
IDENTITY_KEYS = ("url", "channel", "sink", "topic", "device", "service", "command")


def _identity(action: dict[str, Any]) -> tuple[Any, ...]:
    return (action.get("type"), *(str(action.get(key, "")) for key in IDENTITY_KEYS))


def _previous_action(action: dict[str, Any], i: int, previous: list[dict[str, Any]],
                     used: set[int]) -> dict[str, Any]:
    """The stored action that `action` (at position i, with a masked secret) is: the one at
    the same position with the same type and destination, else the only other one with
    them, else the one at the same position with the same type (a destination edited in
    place)."""
    sealed = [j for j, old in enumerate(previous)
              if old.get("secret_encrypted") and j not in used]
    same = [j for j in sealed if _identity(previous[j]) == _identity(action)]
    if i in same:
        pick = i
    elif len(same) == 1:
        pick = same[0]
    elif i in sealed and previous[i].get("type") == action.get("type"):
        pick = i
    else:
        return {}
    used.add(pick)
    return previous[pick]


def seal_action_secrets(actions: list[dict[str, Any]],
                        previous: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Replace each action's plain `secret` by its Fernet token; a masked secret keeps the
    token of the stored action it is (same type and destination, wherever it moved in the
    list; see `_previous_action`), an absent one drops it."""
    sealed = []
    used: set[int] = set()
    for i, action in enumerate(actions):
        action = dict(action)
        secret = action.pop("secret", None)
        old = _previous_action(action, i, previous or [], used) if secret == MASK else {}
        if secret and secret != MASK:
            action["secret_encrypted"] = encrypt_secret(str(secret))
        elif old.get("secret_encrypted"):
            action["secret_encrypted"] = old["secret_encrypted"]
        else:
            action.pop("secret_encrypted", None)
        sealed.append(action)
    return sealed


def masked_actions(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for action in actions:
        shown = {k: v for k, v in action.items() if k != "secret_encrypted"}
        if action.get("secret_encrypted"):
            shown["secret"] = MASK
        out.append(shown)
    return out


def action_secret(action: dict[str, Any]) -> str:
    token = action.get("secret_encrypted")
    return decrypt_secret(token) if token else ""


def channel_secret(channel: NotificationChannel) -> str:
    return decrypt_secret(channel.secret_encrypted) if channel.secret_encrypted else ""


def channel_url(channel: NotificationChannel) -> str:
    """Where the channel sends: its URL with the stored credential put back."""
    config = channel.config if isinstance(channel.config, dict) else {}
    url = str(config.get("url") or "")
    token = config.get(URL_TOKEN_KEY)
    return notify.join_url_token(channel.channel_type, url, decrypt_secret(token)) \
        if token else url


def shown_channel_config(channel: NotificationChannel) -> Any:
    """The config as users see it: no encrypted credential, a robot URL's credential
    masked (also in one saved before credentials were kept apart)."""
    if not isinstance(channel.config, dict):
        return channel.config
    shown = {k: v for k, v in channel.config.items() if k != URL_TOKEN_KEY}
    if isinstance(shown.get("url"), str):
        shown["url"] = notify.split_url_token(channel.channel_type, shown["url"])[0]
    return shown


def sink_credentials(sink: Sink) -> dict[str, Any]:
    if not sink.credentials_encrypted:
        return {}
    return dict(json.loads(decrypt_secret(sink.credentials_encrypted)))
