from django.db import models
from django.utils.translation import gettext_lazy as _


class TriggerType(models.TextChoices):
    PROPERTY = "property", _("Property report")
    EVENT = "event", _("Device event")
    COMMAND_RESPONSE = "cmdrsp", _("Command response")
    STATUS = "status", _("Online / offline")
    SCHEDULE = "schedule", _("Schedule (cron)")


class FireMode(models.TextChoices):
    EACH = "each", _("Every message the condition holds for")
    CHANGE = "change", _("Only when the condition starts to hold")


class ActionType(models.TextChoices):
    ALARM = "alarm", _("Raise an alarm")
    CLEAR_ALARM = "clear_alarm", _("Clear an alarm")
    NOTIFY = "notify", _("Send a notification")
    WEBHOOK = "webhook", _("Call a webhook")
    COMMAND = "command", _("Send a command")
    SHADOW = "shadow", _("Set a desired shadow value")
    FORWARD = "forward", _("Forward to a sink")
    PUBLISH = "publish", _("Publish to an MQTT topic")


class Severity(models.TextChoices):
    CRITICAL = "critical", _("Critical")
    MAJOR = "major", _("Major")
    MINOR = "minor", _("Minor")
    WARNING = "warning", _("Warning")
    INFO = "info", _("Info")


SEVERITY_RANK = {"critical": 5, "major": 4, "minor": 3, "warning": 2, "info": 1}


class AlarmStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    ACKNOWLEDGED = "acknowledged", _("Acknowledged")
    CLEARED = "cleared", _("Cleared")


OPEN_ALARM_STATUSES = (AlarmStatus.ACTIVE, AlarmStatus.ACKNOWLEDGED)


class AlarmEventKind(models.TextChoices):
    RAISED = "raised", _("Raised")
    UPDATED = "updated", _("Updated (condition held again)")
    ACKNOWLEDGED = "acknowledged", _("Acknowledged")
    ASSIGNED = "assigned", _("Assigned")
    COMMENTED = "commented", _("Commented")
    CLEARED = "cleared", _("Cleared")


class TraceKind(models.TextChoices):
    FIRED = "fired", _("Fired")
    CLEARED = "cleared", _("Condition stopped holding (auto-clear)")
    SCHEDULED = "scheduled", _("Scheduled run")


class ChannelType(models.TextChoices):
    EMAIL = "email", _("Email")
    WEBHOOK = "webhook", _("Webhook (HMAC-SHA256 signed)")
    DINGTALK = "dingtalk", _("DingTalk robot")
    WECOM = "wecom", _("WeCom robot")
    FEISHU = "feishu", _("Feishu robot")
    INSITE = "insite", _("In-site message")


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SENT = "sent", _("Sent")
    RETRYING = "retrying", _("Retrying")
    FAILED = "failed", _("Failed")


class SinkType(models.TextChoices):
    HTTP = "http", _("HTTP(S)")
    MQTT = "mqtt", _("MQTT (external broker)")
    KAFKA = "kafka", "Kafka"
    RABBITMQ = "rabbitmq", _("RabbitMQ (AMQP)")
    ROCKETMQ = "rocketmq", "RocketMQ"
    MYSQL = "mysql", _("MySQL / MariaDB")
    POSTGRESQL = "postgresql", "PostgreSQL"
    REDIS = "redis", _("Redis (stream or list)")
    TOPIC = "topic", _("Internal topic (republish)")
    LOG = "log", _("Log")


class SinkHealth(models.TextChoices):
    UNKNOWN = "unknown", _("Unknown")
    HEALTHY = "healthy", _("Healthy")
    FAILING = "failing", _("Failing")
