"""The web app and the API through PgBouncer in transaction mode, the workers
direct (docs/deploy.md): Debian's ``pgbouncer`` (``make pooler-deps``), started
by the test on a free port with its configuration in tmp_path, in front of the
test database; gunicorn on the pooler, real workers on WORKER_DATABASE_URL."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from fulfillment.models import Purchase, TutoringSession
from fulfillment.testing import stripe_events
from kcproject.settings import database_session_settings
from tests import helpers
from tests.helpers import ROOT, WorkerProcess, database_url_for_tests, wait_until
from tools.stack import Delivery, Sender, free_port

pytestmark = pytest.mark.slow

PGBOUNCER = Path(os.environ.get("PGBOUNCER_PATH", "/usr/sbin/pgbouncer"))
HOST = "127.0.0.1"
# Fewer server connections than clients (gunicorn's workers each keep one, the
# test opens more): only transaction pooling serves them all at once.
POOL_SIZE = 2
WEB_WORKERS = 3
PAYMENTS = 12


def with_query(url: str, **parameters: str) -> str:
    """``url`` with ``parameters`` added to its query string (a unix-socket URL
    already carries ``?host=…``)."""
    joined = "&".join(f"{key}={value}" for key, value in parameters.items())
    return f"{url}{'&' if '?' in url else '?'}{joined}"


@dataclass
class Bouncer:
    port: int
    dbname: str
    user: str
    log: Path

    def url(self, application_name: str) -> str:
        return (
            f"postgres://{self.user}@{HOST}:{self.port}/{self.dbname}"
            f"?application_name={application_name}"
        )

    def admin(self, command: str) -> list[dict[str, Any]]:
        """A SHOW command on PgBouncer's admin console (simple protocol only)."""
        with psycopg.connect(
            host=HOST,
            port=self.port,
            dbname="pgbouncer",
            user=self.user,
            autocommit=True,
            prepare_threshold=None,
        ) as conn:
            cursor = psycopg.ClientCursor(conn)
            cursor.execute(command)
            names = [column.name for column in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@pytest.fixture
def pgbouncer(transactional_db: None, tmp_path: Path) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode in front of the test database."""
    if not PGBOUNCER.exists():
        message = f"{PGBOUNCER} is missing: run `make pooler-deps` as root"
        if os.geteuid() == 0:
            # Where it can be installed (CI runs as root), missing is a failure.
            pytest.fail(message)
        pytest.skip(message)
    params = connection.settings_dict
    user = params["USER"] or "postgres"
    dbname = params["NAME"]
    server_host = params["HOST"] or "/var/run/postgresql"
    port = free_port()
    (tmp_path / "userlist.txt").write_text(f'"{user}" ""\n')
    config = tmp_path / "pgbouncer.ini"
    config.write_text(
        f"""\
[databases]
{dbname} = host={server_host} port={params["PORT"] or 5432} dbname={dbname} user={user}

[pgbouncer]
listen_addr = {HOST}
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {tmp_path / "userlist.txt"}
admin_users = {user}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
max_client_conn = 100
; A client waiting for a server connection fails fast instead of hanging the test.
query_wait_timeout = 15
; Nothing is ignored: a startup parameter PgBouncer cannot pass on (the
; settings' -c options) must fail the connection, not vanish.
ignore_startup_parameters =
"""
    )
    log = tmp_path / "pgbouncer.log"
    # It refuses to run as root: it reads its files first, then becomes nobody.
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [str(PGBOUNCER), *as_user, str(config)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    bouncer = Bouncer(port=port, dbname=dbname, user=user, log=log)

    def up() -> bool:
        assert process.poll() is None, f"pgbouncer exited:\n{log.read_text()}"
        try:
            bouncer.admin("SHOW VERSION")
        except psycopg.OperationalError:
            return False
        return True

    # The limits the app cannot send through the pooler: the server's defaults
    # for this database, as docs/deploy.md says to set them.
    limits = database_session_settings(
        statement_timeout_s=settings.DATABASE_STATEMENT_TIMEOUT_S
    )
    with connection.cursor() as cursor:
        for name, value in limits.items():
            cursor.execute(f'ALTER DATABASE "{dbname}" SET {name} = %s', [value])
    try:
        wait_until(up, timeout=15, interval=0.1, what="pgbouncer answering")
        yield bouncer
    finally:
        process.terminate()
        process.wait(timeout=10)
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{dbname}" RESET ALL')


@pytest.fixture
def web_through_pooler(pgbouncer: Bouncer, tmp_path: Path) -> Iterator[dict[str, str]]:
    """gunicorn whose DATABASE_URL is the pooler; the environment it runs with."""
    env = {
        **os.environ,
        "DATABASE_URL": pgbouncer.url("fulfillment-web"),
        "DATABASE_TRANSACTION_POOLER": "1",
        "WORKER_DATABASE_URL": with_query(
            database_url_for_tests(), application_name="fulfillment-worker"
        ),
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
        "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(16),
        "FULFILMENT_API_TOKEN": secrets.token_urlsafe(24),
        "DJANGO_ALLOWED_HOSTS": HOST,
    }
    port = free_port()
    log = tmp_path / "gunicorn.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "kcproject.wsgi:application",
            f"--bind={HOST}:{port}",
            f"--workers={WEB_WORKERS}",
            "--timeout=30",
            "--graceful-timeout=5",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        assert process.poll() is None, f"gunicorn exited:\n{log.read_text()}"
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}/webhooks/stripe/", timeout=2)
        except urllib.error.HTTPError as error:
            return error.code == 405  # GET is not allowed: the app answers
        except OSError:
            return False
        return False

    try:
        wait_until(up, timeout=30, interval=0.2, what="gunicorn answering")
        yield {**env, "PORT": str(port)}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_pipeline_runs_end_to_end_with_the_web_through_pgbouncer(
    pgbouncer: Bouncer,
    web_through_pooler: dict[str, str],
    worker_process: Callable[..., WorkerProcess],
) -> None:
    env = web_through_pooler
    port = int(env["PORT"])
    course = helpers.course()
    for _ in range(3):
        helpers.trainer(courses=[course], max_active_students=10)
    # The workers are told both URLs, as compose tells them: they take the direct one.
    workers = [
        worker_process(env={key: env[key] for key in env if key != "PORT"})
        for _ in range(2)
    ]

    students = []
    with Sender(port=port, secret=env["STRIPE_WEBHOOK_SECRET"], threads=8) as sender:
        for number in range(PAYMENTS):
            # An hour of its own (9 AM to 6 PM), so no purchase waits for a trainer.
            hour = 9 + number % 10
            slot = f"{(hour - 1) % 12 + 1}:00 {'AM' if hour < 12 else 'PM'}"
            metadata = helpers.metadata_for(course=course, time_slot=slot)
            students.append(metadata["student_id"])
            event = stripe_events.payment_intent_succeeded(metadata=metadata)
            sender.submit(Delivery("payment", event["data"]["object"]["id"], event))
        assert sender.wait_idle(60)
    answers = [d.answer for d in sender.deliveries]
    assert [(a.status if a else None) for a in answers] == [200] * PAYMENTS, [
        (a.status, a.body) if a else None for a in answers
    ]
    assert {a.body["status"] for a in answers if a} == {"accepted"}

    def all_allocated() -> bool:
        for worker in workers:
            assert worker.process.poll() is None, worker.output()
        allocated = Purchase.objects.filter(status=Purchase.Status.ALLOCATED)
        return (
            allocated.count() == PAYMENTS
            and TutoringSession.objects.filter(purchase__in=allocated)
            .values("purchase")
            .distinct()
            .count()
            == PAYMENTS
        )

    wait_until(all_allocated, timeout=60, interval=0.2, what="purchases allocated")
    assert not Purchase.objects.exclude(status=Purchase.Status.ALLOCATED).exists()

    # The API, through the pooler too.
    request = urllib.request.Request(
        f"http://{HOST}:{port}/api/students/{students[0]}/learnings",
        headers={"Authorization": f"Bearer {env['FULFILMENT_API_TOKEN']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 200
        assert students[0] in response.read().decode()

    # PgBouncer carried the web's traffic, in transaction mode...
    pools = [
        p for p in pgbouncer.admin("SHOW POOLS") if p["database"] == pgbouncer.dbname
    ]
    assert [p["pool_mode"] for p in pools] == ["transaction"]
    stats = {s["database"]: s for s in pgbouncer.admin("SHOW STATS")}
    # webhooks: health check + transaction each; the API; the workers: none.
    assert stats[pgbouncer.dbname]["total_xact_count"] >= PAYMENTS + 1
    clients = [
        c for c in pgbouncer.admin("SHOW CLIENTS") if c["database"] == pgbouncer.dbname
    ]
    assert {c["application_name"] for c in clients} == {"fulfillment-web"}
    servers = [
        s for s in pgbouncer.admin("SHOW SERVERS") if s["database"] == pgbouncer.dbname
    ]
    assert 0 < len(servers) <= POOL_SIZE

    # ...and the workers were never its clients: they LISTEN on PostgreSQL itself.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'fulfillment-worker' AND query LIKE 'LISTEN%%'"
        )
        assert cursor.fetchone() == (len(workers),)


def test_more_clients_than_server_connections_share_them(pgbouncer: Bouncer) -> None:
    """Transaction pooling, not session pooling: three clients holding their
    connections take turns on two server connections; each sees the limits the
    settings cannot send through the pooler, set on the server instead."""
    url = pgbouncer.url("fulfillment-web")
    with (
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as first,
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as second,
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as third,
    ):
        for conn in (first, second, third, first, third):
            assert conn.execute("SHOW statement_timeout").fetchone() == (
                f"{settings.DATABASE_STATEMENT_TIMEOUT_S}s",
            )
            assert conn.execute("SHOW lock_timeout").fetchone() == (
                f"{settings.DATABASE_LOCK_TIMEOUT_S}s",
            )
        clients = pgbouncer.admin("SHOW CLIENTS")
        servers = pgbouncer.admin("SHOW SERVERS")
    ours = [c for c in clients if c["database"] == pgbouncer.dbname]
    assert len(ours) == 3
    assert len([s for s in servers if s["database"] == pgbouncer.dbname]) <= POOL_SIZE


def test_session_settings_in_the_startup_packet_are_refused(pgbouncer: Bouncer) -> None:
    """Why the settings send no ``options`` through the pooler: PgBouncer refuses
    the connection (and, told to ignore it, would drop the limits silently)."""
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        psycopg.connect(
            pgbouncer.url("fulfillment-web"), options="-c statement_timeout=5s"
        )
