"""Settings for the fulfilment service, read from the environment (CONTRACT §2).

One module for every environment: the environment decides. Bad values stop the
process at start with a message naming the variable (see ``kcproject.env``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext

from kcproject.env import (
    env_bool,
    env_choice,
    env_database_url,
    env_int,
    env_list,
    env_secret,
    env_time_zone,
)

django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", True)

# Public, fixed development values: printed by `make run`, refused when DEBUG is off.
# ruff: noqa: S105 (these are deliberately public dev values, not secrets)
DEV_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"
DEV_WEBHOOK_SECRET = "whsec_dev_fulfilment_local_only"
DEV_API_TOKEN = "dev-fulfilment-api-token"

SECRET_KEY = env_secret(
    "DJANGO_SECRET_KEY", dev_default=DEV_SECRET_KEY, required=not DEBUG
)
STRIPE_WEBHOOK_SECRET = env_secret(
    "STRIPE_WEBHOOK_SECRET", dev_default=DEV_WEBHOOK_SECRET, required=not DEBUG
)
FULFILMENT_API_TOKEN = env_secret(
    "FULFILMENT_API_TOKEN", dev_default=DEV_API_TOKEN, required=not DEBUG
)
# Stripe refuses deliveries signed longer ago than this (CONTRACT §3).
STRIPE_WEBHOOK_TOLERANCE_SECONDS = 300

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"]
)

INSTALLED_APPS = [
    # django-admin-tools must come before django.contrib.admin.
    "admin_tools",
    "admin_tools.theming",
    "admin_tools.menu",
    "admin_tools.dashboard",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "procrastinate.contrib.django",
    "fulfillment",
    "admin_ui",
]
# tools/benchmark.py measures procrastinate's own ceiling with a no-op chain task.
if env_bool("FULFILMENT_BENCH", False):
    INSTALLED_APPS.append("tools.bench")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "kcproject.urls"
WSGI_APPLICATION = "kcproject.wsgi.application"

TEMPLATES: list[dict[str, Any]] = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        # admin_tools needs its own loader, so APP_DIRS must stay off.
        "APP_DIRS": False,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "loaders": [
                "admin_tools.template_loaders.Loader",
                "django.template.loaders.app_directories.Loader",
            ],
        },
    }
]

# The embedded server of tools/devdb.py, when no DATABASE_URL is given.
EMBEDDED_DATABASE_URL = (
    f"postgres://postgres@/fulfillment?host={BASE_DIR / '.data' / 'run'}"
)


def _database(url: str) -> dict[str, Any]:
    config: dict[str, Any] = dict(
        dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    )
    options = config.setdefault("OPTIONS", {})
    # A unix-socket URL carries its directory as ?host=...; Django wants it in HOST.
    if "host" in options and not config.get("HOST"):
        config["HOST"] = options.pop("host")
    options.setdefault("application_name", "fulfillment")
    return config


# Not kept as a setting of its own: a password in the URL would show on DEBUG's
# error page, which masks only names like *PASS*, *SECRET*, *TOKEN*, *KEY*.
DATABASES = {
    "default": _database(env_database_url("DATABASE_URL", EMBEDDED_DATABASE_URL))
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# All state stays in PostgreSQL: the cache is a table too (created by a migration).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "fulfillment_cache",
        "TIMEOUT": 24 * 3600,
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_time_zone("TIME_ZONE", "Asia/Kolkata")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "static"

LOGIN_URL = "admin:login"

# --- procrastinate -------------------------------------------------------------
# Workers beat every 2 s and count as stalled after 10 s (five missed beats: a
# busy event loop or a slow commit must not make a live worker look dead). With
# rescue every 5 s and 2 s fetch polling, a job whose worker was SIGKILLed runs
# again on another worker within about 17 s, inside the 30 s goal.
WORKER_HEARTBEAT_SECONDS = 2.0
WORKER_STALLED_AFTER_SECONDS = 10.0
WORKER_CONCURRENCY = env_int("WORKER_CONCURRENCY", 4, minimum=1)
PROCRASTINATE_WORKER_DEFAULTS = {
    "concurrency": WORKER_CONCURRENCY,
    "update_heartbeat_interval": WORKER_HEARTBEAT_SECONDS,
    "stalled_worker_timeout": WORKER_STALLED_AFTER_SECONDS,
    "shutdown_graceful_timeout": 20.0,
    "fetch_job_polling_interval": 2.0,
    # task_middleware: installed by fulfillment.queue.worker.on_app_ready.
}
# Periodic ticks missed while no worker ran are not replayed beyond this.
PROCRASTINATE_PERIODIC_DEFAULTS = {"max_delay": 600}
# The worker's own pool in autocommit without a probe per query, and a fetch
# loop that keeps its wake-ups, and the task middleware (fulfillment/queue/).
PROCRASTINATE_ON_APP_READY = "fulfillment.queue.worker.on_app_ready"

# --- admin ---------------------------------------------------------------------
# A purchase waitlisted longer than this since its payment fails `doctor` and
# shows in red on the dashboard.
WAITLIST_SLA_HOURS = env_int("WAITLIST_SLA_HOURS", 24, minimum=1)
# Every date and time the console shows, in one format with the zone's label
# ("Mon 7 Jan 2030, 16:00 IST"): kcproject/formats/en_GB/formats.py.
FORMAT_MODULE_PATH = ["kcproject.formats"]
ADMIN_TOOLS_INDEX_DASHBOARD = "admin_ui.dashboard.OperationsDashboard"
ADMIN_TOOLS_MENU = "admin_ui.menu.OperationsMenu"
ADMIN_TOOLS_THEMING_CSS = None

# --- logging -------------------------------------------------------------------
LOG_FORMAT = env_choice("LOG_FORMAT", "text", ("text", "json"))
LOG_LEVEL = env_choice(
    "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
)
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"()": "kcproject.logging.TextFormatter"},
        "json": {"()": "kcproject.logging.JsonFormatter"},
    },
    "filters": {"quiet_maintenance": {"()": "kcproject.logging.QuietMaintenanceJobs"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["quiet_maintenance"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # procrastinate logs every job at INFO; keep that, but not its DEBUG chatter.
        "procrastinate": {"level": "INFO" if LOG_LEVEL == "DEBUG" else LOG_LEVEL},
        # Task and periodic registration is logged by every process at start.
        "procrastinate.blueprints": {"level": "WARNING"},
        "procrastinate.periodic": {"level": "WARNING"},
        # Every defer is logged with the whole job; our services log the ids.
        "procrastinate.jobs": {"level": "WARNING"},
    },
}

# --- security ------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
