"""Every change to devices goes through here: the transaction, then — after commit — the
registry for the edge and the downlink to devices.

The package keeps one public namespace, ``webapp.devices.actions``, over modules per topic.
"""

from webapp.devices.actions.commands import (
    cancel_command,
    complete_command,
    delivered,
    dispatch_command,
    dispatch_pending,
    expire_commands,
    retry_pending,
    send_command,
    sync_wait_slot,
    undelivered,
    wait_for_command,
)
from webapp.devices.actions.connections import (
    expire_connections,
    record_connections,
    touch_last_seen,
)
from webapp.devices.actions.devices import (
    create_device,
    delete_device,
    record_connect_status,
    rotate_secret,
    set_device_status,
    update_device,
)
from webapp.devices.actions.groups import (
    change_members,
    create_group,
    delete_group,
    update_group,
)
from webapp.devices.actions.imports import (
    ImportOutcome,
    export_devices,
    import_devices,
    read_dataset,
)
from webapp.devices.actions.shadow import answer_get as answer_shadow_get
from webapp.devices.actions.shadow import document as shadow_document
from webapp.devices.actions.shadow import report as report_shadow
from webapp.devices.actions.shadow import send_deltas as send_shadow_deltas
from webapp.devices.actions.shadow import set_desired
from webapp.devices.actions.topology import handle_request as handle_topology_request

__all__ = [
    "ImportOutcome",
    "answer_shadow_get",
    "cancel_command",
    "change_members",
    "complete_command",
    "create_device",
    "create_group",
    "delete_device",
    "delete_group",
    "delivered",
    "dispatch_command",
    "dispatch_pending",
    "expire_commands",
    "expire_connections",
    "export_devices",
    "handle_topology_request",
    "import_devices",
    "read_dataset",
    "record_connect_status",
    "record_connections",
    "report_shadow",
    "retry_pending",
    "rotate_secret",
    "send_command",
    "send_shadow_deltas",
    "set_desired",
    "set_device_status",
    "shadow_document",
    "sync_wait_slot",
    "touch_last_seen",
    "undelivered",
    "update_device",
    "update_group",
    "wait_for_command",
]
