from django.db import models
from django.utils.translation import gettext_lazy as _


class DataScope(models.TextChoices):
    """Which records of data-scoped models (products, devices, rules, …) a role reaches."""

    ALL = "all", _("All data")
    CUSTOM = "custom", _("Custom departments")
    DEPARTMENT = "department", _("Own department")
    DEPARTMENT_AND_BELOW = "department_and_below", _("Own department and below")
    SELF = "self", _("Only own records")


class MenuType(models.TextChoices):
    DIRECTORY = "directory", _("Directory")
    PAGE = "page", _("Page")
    BUTTON = "button", _("Button")


class Gender(models.TextChoices):
    UNKNOWN = "", _("Unknown")
    MALE = "male", _("Male")
    FEMALE = "female", _("Female")


class ParameterType(models.TextChoices):
    STRING = "string", _("Text")
    INTEGER = "integer", _("Integer")
    BOOLEAN = "boolean", _("Boolean")
    JSON = "json", _("JSON")


class NoticeType(models.TextChoices):
    NOTICE = "notice", _("Notice")
    ANNOUNCEMENT = "announcement", _("Announcement")


class NoticeStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    PUBLISHED = "published", _("Published")
    CLOSED = "closed", _("Closed")


class Audience(models.TextChoices):
    ALL = "all", _("Everyone")
    DEPARTMENTS = "departments", _("Departments")
    ROLES = "roles", _("Roles")
    USERS = "users", _("Users")


class MessageCategory(models.TextChoices):
    NOTICE = "notice", _("Notice")
    ALARM = "alarm", _("Alarm")
    SYSTEM = "system", _("System")


class OperationSource(models.TextChoices):
    API = "api", _("API")
    ADMIN = "admin", _("Admin")
    TASK = "task", _("Task")
    SYSTEM = "system", _("System")


class OperationAction(models.TextChoices):
    CREATE = "create", _("Create")
    UPDATE = "update", _("Update")
    DELETE = "delete", _("Delete")
    OTHER = "other", _("Other")


class LoginChannel(models.TextChoices):
    API = "api", _("API")
    ADMIN = "admin", _("Admin")


class LoginResult(models.TextChoices):
    SUCCESS = "success", _("Success")
    BAD_CREDENTIALS = "bad_credentials", _("Wrong username or password")
    LOCKED = "locked", _("Locked out")
    INACTIVE = "inactive", _("Account disabled")


class TaskRunStatus(models.TextChoices):
    STARTED = "started", _("Started")
    SUCCESS = "success", _("Succeeded")
    FAILURE = "failure", _("Failed")
    RETRY = "retry", _("Retrying")
