"""Settings for the fulfilment service, read from the environment (CONTRACT §2).

One module for every environment: the environment decides. Bad values stop the
process at start with a message naming the variable (see ``kcproject.env``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from kcproject.env import (
    env_bool,
    env_choice,
    env_database_url,
    env_int,
    env_list,
    env_optional_database_url,
    env_secret,
    env_str,
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
    # Static files before sessions and auth: no cookie, no query per file.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's session, auth and messages middleware, skipped for /webhooks/
    # (no cookie, no user there): fulfillment/web/middleware.py.
    "fulfillment.web.middleware.SessionOutsideWebhooks",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "fulfillment.web.middleware.AuthenticationOutsideWebhooks",
    "fulfillment.web.middleware.MessagesOutsideWebhooks",
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


# --- how long anything may hold up the database ----------------------------------
# No session may stall the others for long (issue #12, item 6): a dead peer is
# noticed by both ends within DATABASE_DEAD_PEER_TIMEOUT_S (TCP keepalives and
# tcp_user_timeout, in libpq for the client and as session settings for the
# server, which is the end that holds a dead client's locks); a lock wait, a
# statement and an idle transaction are each bounded. 0 turns a limit off.
# 20 s: a worker cut off from the database loses its session (and the row locks
# it held) soon enough for its job to run again elsewhere within 30 s of the cut
# (heartbeat 2 s, stalled after 10 s, rescue every 5 s; `make partition`).
DATABASE_DEAD_PEER_TIMEOUT_S = env_int("DATABASE_DEAD_PEER_TIMEOUT_S", 20, minimum=6)
DATABASE_LOCK_TIMEOUT_S = env_int("DATABASE_LOCK_TIMEOUT_S", 10, minimum=0)
DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_S = env_int(
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_S", 60, minimum=0
)
# Web requests, the console and commands: no request has a reason to run longer.
DATABASE_STATEMENT_TIMEOUT_S = env_int("DATABASE_STATEMENT_TIMEOUT_S", 30, minimum=0)
# Workers and migrate: none by default. Their long statements are the work
# itself (procrastinate's fetch on a deep queue, pruning and ANALYZE of the jobs
# table, a migration's index build): killed, they roll back and start over,
# forever. What could hang them is bounded already: lock waits by lock_timeout,
# dead peers by keepalives; and a slow one is named by ``manage.py doctor``.
DATABASE_WORKER_STATEMENT_TIMEOUT_S = env_int(
    "DATABASE_WORKER_STATEMENT_TIMEOUT_S", 0, minimum=0
)
_LONG_RUNNING_COMMANDS = (["migrate"], ["procrastinate", "worker"])


def _runs_long_statements(argv: list[str]) -> bool:
    """Whether this process is ``manage.py migrate`` or a worker."""
    return any(argv[1 : 1 + len(cmd)] == cmd for cmd in _LONG_RUNNING_COMMANDS)


def database_session_settings(*, statement_timeout_s: int) -> dict[str, str]:
    """The server session limits every connection asks for (``-c name=value``).

    A connection through a transaction-mode pooler cannot ask (see
    ``_database``): there they must be the server's defaults for the role or
    database, e.g. ``ALTER DATABASE … SET lock_timeout = '10s'`` (docs/deploy.md).
    """
    dead_peer = DATABASE_DEAD_PEER_TIMEOUT_S
    idle, interval, count = _keepalive_schedule(dead_peer)
    return {
        "lock_timeout": f"{DATABASE_LOCK_TIMEOUT_S}s",
        "statement_timeout": f"{statement_timeout_s}s",
        "idle_in_transaction_session_timeout": (
            f"{DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_S}s"
        ),
        # Ignored on unix sockets, where there is no peer to lose.
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": str(interval),
        "tcp_keepalives_count": str(count),
        "tcp_user_timeout": f"{dead_peer}s",
    }


def _keepalive_schedule(dead_peer: int) -> tuple[int, int, int]:
    # Probes start after half the budget, then three, a sixth of it apart.
    return dead_peer // 2, max(dead_peer // 6, 1), 3


def database_timeouts(
    *, statement_timeout_s: int, session_settings: bool = True
) -> dict[str, Any]:
    """libpq keepalives and server session limits, as Django's OPTIONS.

    They reach every connection: Django's, and the worker's pool and LISTEN
    connection, which procrastinate builds from the same OPTIONS. Without
    ``session_settings`` only the client's own keepalives (for a pooler).
    """
    dead_peer = DATABASE_DEAD_PEER_TIMEOUT_S
    idle, interval, count = _keepalive_schedule(dead_peer)
    client: dict[str, Any] = {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": dead_peer * 1000,  # libpq wants milliseconds
    }
    if not session_settings:
        return client
    server = database_session_settings(statement_timeout_s=statement_timeout_s)
    options = " ".join(f"-c {name}={value}" for name, value in server.items())
    return {**client, "options": options}


_HOST_PORT = re.compile(r"^(\[[^\]]*\]|[^:]*)(?::(\d*))?$")


def _split_hosts(url: str) -> tuple[str, list[str], list[str]]:
    """libpq's multi-host URL (``postgres://u@h1:p1,h2:p2/db``), which
    dj-database-url cannot parse: the URL with one stand-in host, and the hosts
    and ports (empty lists for a URL with one host or none)."""
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    if "," not in hostlist:
        return url, [], []
    hosts, ports = [], []
    for item in hostlist.split(","):
        match = _HOST_PORT.match(item)
        if not match or not match.group(1):
            raise ImproperlyConfigured(
                "DATABASE_URL: cannot read a host of its host list"
            )
        hosts.append(match.group(1).strip("[]"))
        ports.append(match.group(2) or "5432")
    single = parts._replace(netloc=f"{userinfo}{at}multi-host.invalid")
    return urlunsplit(single), hosts, ports


def _database(
    url: str, *, statement_timeout_s: int, transaction_pooler: bool = False
) -> dict[str, Any]:
    """Django's DATABASES entry for ``url``.

    ``url`` may name several servers, as libpq does (``postgres://u@a:5432,
    b:5432/db?target_session_attrs=read-write``: the first writable one wins),
    either in the host part or as ``?host=a,b&port=p1,p2``.
    ``transaction_pooler``: the URL is a PgBouncer in transaction mode, where a
    client holds a server connection for one transaction only, so nothing may
    outlive one: no server-side cursor (DISABLE_SERVER_SIDE_CURSORS: Django's
    ``.iterator()`` fetches in chunks on a named cursor otherwise), no prepared
    statement (``prepare_threshold=None``: Django's default already, kept
    explicit), and no session settings in the startup packet: PgBouncer 1.18
    refuses an ``options`` parameter, and would drop it silently if told to
    ignore it. Those limits come from the server's defaults instead.
    """
    single, hosts, ports = _split_hosts(url)
    config: dict[str, Any] = dict(
        dj_database_url.parse(single, conn_max_age=60, conn_health_checks=True)
    )
    if hosts:
        config["HOST"], config["PORT"] = ",".join(hosts), ",".join(ports)
    options = config.setdefault("OPTIONS", {})
    # A unix-socket URL carries its directory as ?host=...; Django wants it in HOST.
    if "host" in options and not config.get("HOST"):
        config["HOST"] = options.pop("host")
    if "port" in options and not config.get("PORT"):
        config["PORT"] = options.pop("port")
    options.setdefault("application_name", "fulfillment")
    timeouts = database_timeouts(
        statement_timeout_s=statement_timeout_s,
        session_settings=not transaction_pooler,
    )
    # What the URL says wins: its own keepalives, and its ?options= after ours.
    given_options = options.pop("options", "")
    for name, value in timeouts.items():
        options.setdefault(name, value)
    merged = f"{timeouts.get('options', '')} {given_options}".strip()
    if merged:
        options["options"] = merged
    if transaction_pooler:
        config["DISABLE_SERVER_SIDE_CURSORS"] = True
        options["prepare_threshold"] = None
    return config


# --- which server: direct, or through a pooler -------------------------------------
# DATABASE_URL serves the web app, the API, the console and commands. With
# DATABASE_TRANSACTION_POOLER=1 it is a PgBouncer in transaction mode (see
# ``_database`` for what that changes). Workers cannot go through one: LISTEN
# and procrastinate's worker session outlive a transaction. They, and migrate,
# use WORKER_DATABASE_URL: PostgreSQL itself, or a session-mode pool. Unset,
# every process uses DATABASE_URL.
DATABASE_TRANSACTION_POOLER = env_bool("DATABASE_TRANSACTION_POOLER", False)
_worker_url = env_optional_database_url("WORKER_DATABASE_URL")
_NEEDS_A_SESSION = _runs_long_statements(sys.argv)
if _NEEDS_A_SESSION and _worker_url:
    _url, _pooled = _worker_url, False
elif _NEEDS_A_SESSION and DATABASE_TRANSACTION_POOLER:
    raise ImproperlyConfigured(
        "DATABASE_TRANSACTION_POOLER=1 and WORKER_DATABASE_URL is unset: workers "
        "and migrate need a direct (or session-mode) connection; set "
        "WORKER_DATABASE_URL to it"
    )
else:
    _url = env_database_url("DATABASE_URL", EMBEDDED_DATABASE_URL)
    _pooled = DATABASE_TRANSACTION_POOLER

# Not kept as a setting of its own: a password in the URL would show on DEBUG's
# error page, which masks only names like *PASS*, *SECRET*, *TOKEN*, *KEY*.
DATABASES = {
    "default": _database(
        _url,
        statement_timeout_s=DATABASE_WORKER_STATEMENT_TIMEOUT_S
        if _NEEDS_A_SESSION
        else DATABASE_STATEMENT_TIMEOUT_S,
        transaction_pooler=_pooled,
    )
}
del _url, _pooled, _worker_url
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

# --- static files ----------------------------------------------------------------
# WhiteNoise serves /static/ from the web process itself (gunicorn serves none).
# With DEBUG off: hashed, compressed copies that `collectstatic` wrote to
# STATIC_ROOT (the Dockerfile and tools/run.py run it), cached for a year; a page
# naming a file the manifest lacks fails instead of showing an unstyled console.
# With DEBUG on (development, and the test suite, which leaves DJANGO_DEBUG
# unset): the apps' own files through the finders, with no collect step and no
# manifest; tests/browser/test_console_under_gunicorn.py covers the DEBUG-off path under
# gunicorn. Decided from DJANGO_DEBUG, not settings.DEBUG, which tests force off.
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / ".data" / "static")))
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

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

# `doctor` fails on a transaction holding locks (or idle) longer than this.
DOCTOR_LOCK_HOLD_LIMIT_S = env_int("DOCTOR_LOCK_HOLD_LIMIT_S", 30, minimum=1)

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
