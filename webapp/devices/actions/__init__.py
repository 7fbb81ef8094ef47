"""Every change to devices goes through here (STYLE.md: writes go through actions): the
transaction, then — after commit — the registry for the edge and the downlink to devices.

The package keeps one public namespace, ``webapp.devices.actions``, over modules per topic.
"""

from webapp.devices.actions.commands import (
    cancel_command,
    complete_command,
    dispatch_command,
    dispatch_pending,
    expire_commands,
    send_command,
    wait_for_command,
)
from webapp.devices.actions.devices import (
    create_device,
    delete_device,
    record_connect_status,
    rotate_secret,
    set_device_status,
    update_device,
)

__all__ = [
    "cancel_command",
    "complete_command",
    "create_device",
    "delete_device",
    "dispatch_command",
    "dispatch_pending",
    "expire_commands",
    "record_connect_status",
    "rotate_secret",
    "send_command",
    "set_device_status",
    "update_device",
    "wait_for_command",
]
