"""Every state change of rules, alarms, channels, sinks and deliveries goes through here (views,
the admin and tasks call these): the checks made before a write in `validation`, the writes in
a module per topic.

The package keeps one public namespace, ``webapp.rules.actions``, over those modules.
"""

from webapp.rules.actions.alarms import (
    acknowledge_alarm,
    assign_alarm,
    clear_alarm,
    clear_rule_alarm,
    comment_alarm,
    raise_alarm,
)
from webapp.rules.actions.channels import channel_config, delete_channel, save_channel
from webapp.rules.actions.notifications import (
    create_notification,
    mark_notifications_read,
    record_delivery,
    visible_notifications,
)
from webapp.rules.actions.rules import (
    create_rule,
    delete_rule,
    record_trace,
    set_rule_enabled,
    update_rule,
)
from webapp.rules.actions.sinks import (
    delete_sink,
    mark_redelivered,
    record_dead_letter,
    record_sink_result,
    save_sink,
)
from webapp.rules.actions.validation import (
    ChannelInvalid,
    RuleInvalid,
    check_sink_scope,
    check_trigger_scope,
    check_webhook_destinations,
    out_of_scope_references,
    validate_rule,
)

__all__ = [
    "ChannelInvalid",
    "RuleInvalid",
    "acknowledge_alarm",
    "assign_alarm",
    "channel_config",
    "check_sink_scope",
    "check_trigger_scope",
    "check_webhook_destinations",
    "clear_alarm",
    "clear_rule_alarm",
    "comment_alarm",
    "create_notification",
    "create_rule",
    "delete_channel",
    "delete_rule",
    "delete_sink",
    "mark_notifications_read",
    "mark_redelivered",
    "out_of_scope_references",
    "raise_alarm",
    "record_dead_letter",
    "record_delivery",
    "record_sink_result",
    "record_trace",
    "save_channel",
    "save_sink",
    "set_rule_enabled",
    "update_rule",
    "validate_rule",
    "visible_notifications",
]
