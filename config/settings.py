"""Django settings, all from the environment (and `.env`); see the README for the variables."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from config.env import BASE_DIR, env, env_bool, env_list, load_dotenv
from config.redis_settings import cache_settings, celery_broker, celery_ssl, channel_host
from edge.crypto import MissingSecretKey, derive_key, load_secret_key, new_secret_key
from webapp.core.spreadsheet import FORMATS as SPREADSHEET_FORMATS

load_dotenv()

DEBUG = env_bool("DJANGO_DEBUG", default=False)
# No built-in key: DJANGO_SECRET_KEY, else var/secret_key (DJANGO_SECRET_KEY_FILE), which the
# first `make run` creates with a random key (edge/crypto.py). The test suite makes a random
# key of its own (pytest loads these settings before any conftest).
if "PYTEST_VERSION" in os.environ and not env("DJANGO_SECRET_KEY"):
    os.environ["DJANGO_SECRET_KEY"] = new_secret_key()
try:
    SECRET_KEY = load_secret_key()
except MissingSecretKey as exc:
    raise ImproperlyConfigured(str(exc)) from None
# The same key for edge.crypto and for every process started from here (make run, tests).
os.environ["DJANGO_SECRET_KEY"] = SECRET_KEY
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

# Behind TLS (a reverse proxy or a load balancer that terminates it): secure cookies, HSTS and
# the redirect to https, as Django's deployment checklist asks (`manage.py check --deploy`).
HTTPS = env_bool("DJANGO_HTTPS", default=False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = int(env("DJANGO_HSTS_SECONDS", "31536000")) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS and env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS",
                                                    default=True)
SECURE_HSTS_PRELOAD = HTTPS and env_bool("DJANGO_HSTS_PRELOAD", default=True)
# The proxy in front says which scheme the client used. Trusted only with DJANGO_HTTPS, where
# the web process must be reachable through that proxy alone (it would believe a client's
# X-Forwarded-Proto otherwise).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
# /healthz answers the load balancer's plain-HTTP probe instead of redirecting it.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# Where the platform keeps its files (SQLite database, embedded Redis and its AOF, media, beat's
# pid file): var/ of the checkout, or THINGLINKS_VAR_DIR (tests run a whole platform in a temp dir).
VAR_DIR = Path(env("THINGLINKS_VAR_DIR") or BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)

INSTALLED_APPS = [
    "daphne",
    "webapp.system.admin_app.AdminConfig",  # django.contrib.admin with the ThingLinks site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "import_export",
    "django_celery_beat",
    "channels",
    "webapp.core",
    "webapp.system",
    "webapp.products",
    "webapp.devices",
    "webapp.telemetry",
    "webapp.rules",
    "webapp.console",
    "webapp.ota",
    "webapp.access",
]

MIDDLEWARE = [
    # First: counts and times every request (docs/metrics.md).
    "webapp.core.metrics_web.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "webapp.core.middleware.RefuseNulMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "webapp.system.middleware.SessionMiddleware",
    "webapp.core.middleware.OperationContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "webapp" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

DATABASE_URL = env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'thinglinks.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    if "PYTEST_VERSION" in os.environ:
        # A file, not memory, so that the processes an end-to-end test starts share it.
        DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "system.User"
# Role and menu permissions, login lockout per (username, address): webapp/system/backends.py.
AUTHENTICATION_BACKENDS = ["webapp.system.backends.RoleBackend"]
# The data scope of a user without any role (webapp/system/scope.py).
DATA_SCOPE_DEFAULT = env("DATA_SCOPE_DEFAULT", "self")
# Trusted reverse proxies in front of the web process (client address from X-Forwarded-For).
# Set it only behind that many real proxies, each appending to X-Forwarded-For: otherwise a
# client chooses the address that login lockouts and the operation log record.
NUM_PROXIES = int(env("NUM_PROXIES", "0"))

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    {"NAME": "webapp.system.validators.CharacterClassesValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "webapp" / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = VAR_DIR / "media"

# Redis: the event bus to the edge, Celery's broker, the Channels layer and the cache.
# Unset means the embedded server that `make run` (and the test suite) start on a Unix socket.
# Under pytest the default is the suite's own embedded server (tests/conftest.py starts it).
# `redis+sentinel://host:26379,host2:26379/mymaster/0` names a Sentinel set: every process
# follows its master across a failover (config/redis_settings.py; docs/bus.md, "Redis failover").
# `rediss://…` and `rediss+sentinel://…` are the same over TLS (docs/bus.md, "Redis over TLS").
_EMBEDDED_REDIS_DIR = VAR_DIR / "test-redis" if "PYTEST_VERSION" in os.environ else VAR_DIR
REDIS_URL = env("REDIS_URL") or f"unix://{_EMBEDDED_REDIS_DIR / 'redis.sock'}"
REDIS_PREFIX = env("REDIS_PREFIX", "tl:")

CACHES = {"default": cache_settings(REDIS_URL, REDIS_PREFIX + "cache")}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # channels_redis waits up to 5 s for a group message (BZPOPMIN); redis-py's default
        # read timeout is 5 s too, so an idle console socket broke every 5 s and what was
        # pushed while it reconnected was lost: the read timeout must exceed the wait.
        "CONFIG": {"hosts": [channel_host(REDIS_URL, socket_timeout=15)],
                   "prefix": REDIS_PREFIX + "asgi"},
    }
}

CELERY_BROKER_URL, _CELERY_SENTINEL_OPTIONS = celery_broker(REDIS_URL)
# rediss:// / rediss+sentinel://: the URL's TLS settings, as kombu takes them (else None).
CELERY_BROKER_USE_SSL = celery_ssl(REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "global_keyprefix": REDIS_PREFIX + "celery:", **_CELERY_SENTINEL_OPTIONS
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# GET /metrics (docs/metrics.md): open to loopback requests no proxy forwarded (unless
# METRICS_LOOPBACK_OPEN=0), else to staff users and superusers, or to
# `Authorization: Bearer <METRICS_TOKEN>` when METRICS_TOKEN is set.
METRICS_TOKEN = env("METRICS_TOKEN", "")
METRICS_LOOPBACK_OPEN = env_bool("METRICS_LOOPBACK_OPEN", default=True)

# Networks (comma-separated CIDRs) that sinks, notification channels and webhook actions may
# reach although they are not public (loopback, private, link-local…); empty by default. The
# platform's own database and Redis stay refused even inside them (webapp/core/outbound.py).
OUTBOUND_ALLOWED_NETWORKS = env_list("OUTBOUND_ALLOWED_NETWORKS")

# Time series: `sql` (the Django database) or a TDengine URL (taosws://, taosrest://, taos://).
TSDB_URL = env("TSDB_URL", "sql")
# Device message log retention (days; 0 keeps it forever), and how far back each rollup run
# recomputes buckets for points that arrive late (per-product retention: telemetry.RetentionPolicy).
TELEMETRY_MESSAGE_DAYS = int(env("TELEMETRY_MESSAGE_DAYS", "30"))
TELEMETRY_ROLLUP_LOOKBACK = timedelta(minutes=int(env("TELEMETRY_ROLLUP_LOOKBACK_MINUTES", "60")))
# Device connection history retention (days; 0 keeps it forever), and how often at most
# ingest moves a device's "last seen" forward on its messages (seconds).
CONNECTION_HISTORY_DAYS = int(env("CONNECTION_HISTORY_DAYS", "30"))
DEVICE_LAST_SEEN_INTERVAL = int(env("DEVICE_LAST_SEEN_INTERVAL", "30"))

# The address devices and users reach the web process at (OTA download links and password
# reset links are built on it, never on the request's Host header), and how long an OTA
# download link stays valid (seconds).
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", "http://127.0.0.1:8000")
OTA_URL_TTL = int(env("OTA_URL_TTL", "86400"))

# Where devices reach the edge, for the ready-to-copy snippets the console shows after adding a
# device: the host name (empty: the host the console was opened at) and each transport's port
# (the same variables the edge listens on; 0 means the transport is off).
EDGE_PUBLIC_HOST = env("EDGE_PUBLIC_HOST", "")
EDGE_MQTT_PORT = int(env("EDGE_MQTT_PORT", "11883"))
EDGE_HTTP_PORT = int(env("EDGE_HTTP_PORT", "18080"))
EDGE_COAP_PORT = int(env("EDGE_COAP_PORT", "15683"))
EDGE_TCP_PORT = int(env("EDGE_TCP_PORT", "18901"))
EDGE_UDP_PORT = int(env("EDGE_UDP_PORT", "18902"))

# The console's device map (docs/console.md "The map"): the base tiles' URL template, e.g.
# https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png or an intranet tile server (empty: no tiles,
# a plain background; markers, clusters and popups still work), their attribution (HTML shown in
# the map's corner) and the deepest zoom level.
MAP_TILE_URL = env("MAP_TILE_URL", "")
MAP_TILE_ATTRIBUTION = env("MAP_TILE_ATTRIBUTION", "")
MAP_MAX_ZOOM = int(env("MAP_MAX_ZOOM", "18"))

# How long a command waits for an offline device before it times out (seconds).
DEVICE_COMMAND_TTL = int(env("DEVICE_COMMAND_TTL", "86400"))
# A synchronous command call (`"sync": true`) waits at most this long (seconds), and at most
# this many wait at once in one web process (more are refused with 429).
COMMAND_SYNC_MAX_WAIT = int(env("COMMAND_SYNC_MAX_WAIT", "30"))
COMMAND_SYNC_MAX_CONCURRENT = int(env("COMMAND_SYNC_MAX_CONCURRENT", "16"))

# Uploads (webapp/core/uploads.py), in bytes: a request body besides files (JSON, form fields);
# the size above which an uploaded file goes to a temporary file rather than memory; an import
# file (devices CSV/XLSX, product JSON) and its cells; an OTA package.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(env("DATA_UPLOAD_MAX_MEMORY_SIZE", str(5 * 2**20)))
FILE_UPLOAD_MAX_MEMORY_SIZE = int(env("FILE_UPLOAD_MAX_MEMORY_SIZE", str(2_621_440)))
IMPORT_MAX_BYTES = int(env("IMPORT_MAX_BYTES", str(10 * 2**20)))
IMPORT_MAX_CELLS = int(env("IMPORT_MAX_CELLS", "1000000"))
OTA_MAX_BYTES = int(env("OTA_MAX_BYTES", str(512 * 2**20)))

# Devices that have not been seen for this long are marked offline by the beat sweep.
DEVICE_OFFLINE_AFTER = timedelta(seconds=int(env("DEVICE_OFFLINE_AFTER", "600")))

# Dynamic registration: for how long after it registered itself a device that never connected
# may register again (a new secret: its answer may have been lost). Seconds.
REGISTRATION_RETRY_WINDOW = int(env("REGISTRATION_RETRY_WINDOW", "600"))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "webapp.system.authentication.JWTAuthentication",
        "webapp.system.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["webapp.core.permissions.ModelPermissions"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "webapp.core.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "webapp.core.errors.exception_handler",
    # JSON bodies within DATA_UPLOAD_MAX_MEMORY_SIZE (DRF's own parser reads past it).
    "DEFAULT_PARSER_CLASSES": ["webapp.core.parsers.JSONParser",
                               "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=int(env("JWT_ACCESS_MINUTES", "30"))),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=int(env("JWT_REFRESH_DAYS", "7"))),
    "AUTH_HEADER_TYPES": ("Bearer",),
    # A key of its own, derived from SECRET_KEY: the JWT key is never the key that signs
    # sessions, password reset and OTA links or encrypts device secrets.
    "SIGNING_KEY": derive_key(SECRET_KEY, "jwt"),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ThingLinks API",
    "DESCRIPTION": "Products, thing models, devices, telemetry, rules and system management.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/schema/ and /api/docs/ for logged-in users and API clients only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a `status` (or `source`, …) field with different choices: name each.
    "ENUM_NAME_OVERRIDES": {
        "NoticeStatusEnum": "webapp.system.choices.NoticeStatus",
        "TaskRunStatusEnum": "webapp.system.choices.TaskRunStatus",
        "OperationSourceEnum": "webapp.system.choices.OperationSource",
        "LoginChannelEnum": "webapp.system.choices.LoginChannel",
        "DeviceStatusEnum": "webapp.devices.choices.DeviceStatus",
        "CommandStatusEnum": "webapp.devices.choices.CommandStatus",
        "CommandSourceEnum": "webapp.devices.choices.CommandSource",
        "ProductStatusEnum": "webapp.products.choices.ProductStatus",
        "AlarmStatusEnum": "webapp.rules.choices.AlarmStatus",
        "DeliveryStatusEnum": "webapp.rules.choices.DeliveryStatus",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)-5s %(name)s: %(message)s",
                  "datefmt": "%H:%M:%S"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # `make run` sets WARNING (webapp/devices/management/commands/runplatform.py).
        "celery": {"level": env("CELERY_LOG_LEVEL", "INFO")},
    },
}

LOGIN_URL = "/admin/login/"

# Admin import/export (django-import-export): spreadsheet cells are escaped against formula
# injection on export and unescaped on import (webapp/core/spreadsheet.py).
IMPORT_EXPORT_FORMATS = SPREADSHEET_FORMATS
# Importing needs the model's add permission, exporting its view permission (without these
# anyone who reaches a change list may import into it and export it).
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "add"
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"

# Outgoing email (password reset links, email notifications); printed to the console unless
# an SMTP server is configured.
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend"
                    if env("EMAIL_HOST") else "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = int(env("EMAIL_PORT", "25"))
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "ThingLinks <noreply@localhost>")

MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"  # no secret at rest

CELERY_BEAT_SCHEDULE = {
    "telemetry.persist_latest": {"task": "telemetry.persist_latest", "schedule": 30.0},
    "telemetry.prepare_partitions": {"task": "telemetry.prepare_partitions", "schedule": 3600.0},
    "telemetry.refresh_rollups": {"task": "telemetry.refresh_rollups", "schedule": 60.0},
    "telemetry.apply_retention": {"task": "telemetry.apply_retention", "schedule": 3600.0},
    "system.purge_logs": {"task": "system.purge_logs", "schedule": 24 * 3600.0},
    "devices.sweep_offline": {"task": "devices.sweep_offline", "schedule": 30.0},
    "ota.advance": {"task": "ota.advance", "schedule": 10.0},
    "devices.expire_commands": {"task": "devices.expire_commands", "schedule": 5.0},
}
