"""Typed readers for settings that come from the environment.

Each helper fails at start-up with ``ImproperlyConfigured`` naming the variable and
the value it could not use, so a typo never turns into a silent default.
"""

from __future__ import annotations

import os
import zoneinfo

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off"
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip() or default
    if value not in choices:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not one of: {', '.join(choices)}"
        )
    return value


def env_time_zone(name: str, default: str) -> str:
    value = os.environ.get(name, default).strip() or default
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not an IANA time zone (e.g. Asia/Kolkata)"
        ) from None
    return value


def env_database_url(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip() or default
    _check_database_url(name, value)
    return value


def env_optional_database_url(name: str) -> str | None:
    """A postgres:// URL, or None when the variable is unset or empty."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    _check_database_url(name, value)
    return value


def _check_database_url(name: str, value: str) -> None:
    if not value.startswith(("postgres://", "postgresql://")):
        # Never echo the URL: it may carry a password.
        raise ImproperlyConfigured(
            f"{name} must be a postgres:// or postgresql:// URL "
            f"(got a value starting with {value.split(':', 1)[0]!r})"
        )


def env_secret(name: str, *, dev_default: str, required: bool) -> str:
    """A secret: required in production, a fixed public dev value otherwise."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if required:
        raise ImproperlyConfigured(
            f"{name} is not set; it is required when DJANGO_DEBUG=0"
        )
    return dev_default
