"""kcproject/settings.py's database entries: several hosts, a transaction-mode
pooler, and which URL a worker takes (docs/deploy.md)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from kcproject import settings as project_settings
from tests.helpers import ROOT


def test_a_multi_host_url_becomes_libpq_host_and_port_lists() -> None:
    config = project_settings._database(
        "postgres://u:pw@10.0.0.1:5433,[fd00::2],db-b:5434/shop"
        "?target_session_attrs=read-write",
        statement_timeout_s=30,
    )

    assert config["HOST"] == "10.0.0.1,fd00::2,db-b"
    assert config["PORT"] == "5433,5432,5434"
    assert (config["USER"], config["PASSWORD"], config["NAME"]) == ("u", "pw", "shop")
    assert config["OPTIONS"]["target_session_attrs"] == "read-write"
    assert "-c statement_timeout=30s" in config["OPTIONS"]["options"]


def test_host_lists_in_the_query_string_work_too() -> None:
    config = project_settings._database(
        "postgres://u@/shop?host=/run/a,/run/b&port=5432,5433"
        "&target_session_attrs=primary",
        statement_timeout_s=30,
    )

    assert (config["HOST"], config["PORT"]) == ("/run/a,/run/b", "5432,5433")
    assert "host" not in config["OPTIONS"]
    assert "port" not in config["OPTIONS"]


def test_a_bad_host_list_is_refused_without_echoing_the_url() -> None:
    with pytest.raises(ImproperlyConfigured) as refused:
        project_settings._database(
            "postgres://u:secret@a:1,:2/shop", statement_timeout_s=30
        )
    assert "secret" not in str(refused.value)


def test_through_a_transaction_pooler_nothing_outlives_a_transaction() -> None:
    config = project_settings._database(
        "postgres://u@pgbouncer:6432/shop", statement_timeout_s=30,
        transaction_pooler=True,
    )  # fmt: skip

    assert config["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert config["OPTIONS"]["prepare_threshold"] is None
    # PgBouncer refuses (or drops) startup options: none are sent.
    assert "options" not in config["OPTIONS"]
    # The client's own keepalives stay: the socket to the pooler can die too.
    assert config["OPTIONS"]["keepalives"] == 1
    assert config["CONN_HEALTH_CHECKS"] is True


def _settings_in(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    script = (
        "import sys; sys.argv = sys.argv[1:]\n"
        "from kcproject import settings as s\n"
        "d = s.DATABASES['default']\n"
        "print(d['HOST'], d['DISABLE_SERVER_SIDE_CURSORS'], 'options' in d['OPTIONS'])"
    )
    clean = {k: v for k, v in os.environ.items() if "DATABASE" not in k}
    return subprocess.run(
        [sys.executable, "-c", script, *argv],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


POOLED = {
    "DATABASE_URL": "postgres://u@pgbouncer:6432/shop",
    "DATABASE_TRANSACTION_POOLER": "1",
    "WORKER_DATABASE_URL": "postgres://u@db:5432/shop",
}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["manage.py", "procrastinate", "worker"], "db False True"),
        (["manage.py", "migrate"], "db False True"),
        (["gunicorn", "kcproject.wsgi"], "pgbouncer True False"),
        (["manage.py", "doctor"], "pgbouncer True False"),
    ],
)
def test_workers_and_migrate_go_direct_and_the_rest_through_the_pooler(
    argv: list[str], expected: str
) -> None:
    result = _settings_in(argv, **POOLED)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_a_worker_behind_a_transaction_pooler_without_a_direct_url_is_refused() -> None:
    env = {k: v for k, v in POOLED.items() if k != "WORKER_DATABASE_URL"}
    result = _settings_in(["manage.py", "procrastinate", "worker"], **env)
    assert result.returncode != 0
    assert "WORKER_DATABASE_URL" in result.stderr
