"""The whole service on one machine, production-shaped, for the chaos run and the
benchmark: a PostgreSQL of its own, the web app under gunicorn, W worker processes,
a generated catalogue, and a sender that delivers signed Stripe events the way
Stripe does (retrying a delivery that gets no answer or a 5xx, with backoff).

Standard library plus what the project already installs (psycopg); no Django
import here, so the processes under test are the only Django processes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import math
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from fulfillment.testing import stripe_events  # a pure module, no Django
from tools import devdb

ROOT = Path(__file__).resolve().parent.parent

HOST = "127.0.0.1"
WEBHOOK_PATH = "/webhooks/stripe/"
READY_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --- the database ------------------------------------------------------------------


class Database:
    """A database of the run's own.

    ``data_dir`` given: a server of its own under that directory (tools/devdb.py;
    the embedded PostgreSQL 18, or the machine's own binaries with
    ``postgres_bin``), which the run may restart. Otherwise ``server_url`` names an
    existing server: the run creates (and first drops) a database ``dbname`` on it
    and cannot restart it.
    """

    def __init__(
        self,
        *,
        dbname: str,
        data_dir: Path | None = None,
        postgres_bin: str | None = None,
        server_url: str | None = None,
        fsync: bool = True,
        settings: dict[str, str] | None = None,
    ) -> None:
        if (data_dir is None) == (server_url is None):
            raise ValueError("give exactly one of data_dir and server_url")
        self.dbname = dbname
        self.data_dir = data_dir
        self.postgres_bin = postgres_bin
        self.server_url = server_url
        self.fsync = fsync
        self.settings = settings or {}
        self.url = ""

    @property
    def restartable(self) -> bool:
        return self.data_dir is not None

    @property
    def description(self) -> str:
        if self.data_dir is None:
            return f"database {self.dbname} on the DATABASE_URL server"
        engine = (
            f"PostgreSQL from {self.postgres_bin}"
            if self.postgres_bin
            else ("embedded PostgreSQL")
        )
        return f"{engine} under {self.data_dir}"

    def start(self) -> str:
        if self.data_dir is not None:
            with self._bin_env():
                if devdb.is_running(self.data_dir):
                    devdb.stop(self.data_dir)
                shutil.rmtree(self.data_dir / "postgres", ignore_errors=True)
                self.url = devdb.start(
                    self.data_dir, self.dbname, fsync=self.fsync, settings=self.settings
                )
            return self.url
        with self._server() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        parts = urlsplit(self.server_url or "")
        self.url = urlunsplit(parts._replace(path=f"/{self.dbname}"))
        return self.url

    def restart(self) -> None:
        if self.data_dir is None:
            raise RuntimeError("the server is not ours to restart")
        with self._bin_env():
            devdb.stop(self.data_dir)
            devdb.start(
                self.data_dir, self.dbname, fsync=self.fsync, settings=self.settings
            )

    def stop(self) -> None:
        """Stop our server, or drop our database from the server that is not ours."""
        if self.data_dir is not None:
            with self._bin_env():
                devdb.stop(self.data_dir)
        elif self.url:
            with self._server() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def _server(self) -> psycopg.Connection[Any]:
        """The ``postgres`` database of the server that is not ours."""
        parts = urlsplit(self.server_url or "")
        return psycopg.connect(
            urlunsplit(parts._replace(path="/postgres")), autocommit=True
        )

    @contextlib.contextmanager
    def _bin_env(self) -> Iterator[None]:
        if not self.postgres_bin:
            yield
            return
        before = os.environ.get("DEVDB_PG_BIN")
        os.environ["DEVDB_PG_BIN"] = self.postgres_bin
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("DEVDB_PG_BIN", None)
            else:
                os.environ["DEVDB_PG_BIN"] = before


def postgres_programs(choice: str) -> str | None:
    """The bin directory for ``--postgres``: None for the embedded PostgreSQL,
    this machine's own for ``system``, else the directory given."""
    if choice == "embedded":
        return None
    if choice != "system":
        return choice
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    found = shutil.which("postgres")
    if candidates:
        return str(candidates[-1].parent)
    if found:
        return str(Path(found).parent)
    raise SystemExit("--postgres system: no PostgreSQL programs found on this machine")


# --- the catalogue and the payments ---------------------------------------------

CENTRE = (12.9716, 77.5946)  # Bengaluru
COURSE_TITLES = [
    ("Python for Kids", "home"),
    ("Scratch Games", "home"),
    ("Web Pages with HTML", "home"),
    ("Minecraft Modding", "online"),
    ("Roblox Studio", "online"),
    ("AI for Young Makers", "online"),
]


def _near(rng: random.Random, radius_km: float) -> tuple[float, float]:
    distance = radius_km * math.sqrt(rng.random())
    bearing = rng.random() * 2 * math.pi
    lat = CENTRE[0] + distance / 111.0 * math.cos(bearing)
    lon = CENTRE[1] + distance / (111.0 * math.cos(math.radians(CENTRE[0]))) * (
        math.sin(bearing)
    )
    return round(lat, 5), round(lon, 5)


def catalogue(*, trainers: int, seed: int) -> dict[str, Any]:
    """Courses and ``trainers`` trainers around one city, in import_catalog form."""
    rng = random.Random(seed)
    courses = [
        {"id": str(uuid.UUID(int=rng.getrandbits(128))), "title": t, "mode": m}
        for t, m in COURSE_TITLES
    ]
    entries = []
    for number in range(trainers):
        lat, lon = _near(rng, 15)
        start = rng.choice([8, 9, 10, 12])
        weekdays = [0, 1, 2, 3, 4] if rng.random() < 0.7 else [6]
        if rng.random() < 0.2:
            weekdays = [0, 1, 2, 3, 4, 5, 6]
        entries.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "name": f"Trainer {number:04d}",
                "email": f"trainer{number:04d}@example.com",
                "courses": [c["id"] for c in rng.sample(courses, rng.randint(1, 3))],
                "latitude": lat,
                "longitude": lon,
                "max_travel_km": rng.choice([5, 8, 10, 15]),
                "max_active_students": rng.randint(2, 8),
                "weekdays": weekdays,
                "work_start": f"{start:02d}:00",
                "work_end": f"{min(start + rng.choice([8, 10, 12]), 21):02d}:00",
                "is_active": True,
            }
        )
    return {"courses": courses, "trainers": entries}


@dataclass
class Students:
    """A pool of students, some of whom buy more than once."""

    rng: random.Random
    pool: list[tuple[str, str, tuple[float, float]]] = field(default_factory=list)

    def pick(self) -> tuple[str, str, tuple[float, float]]:
        if self.pool and self.rng.random() < 0.3:
            return self.rng.choice(self.pool)
        student = (
            str(uuid.UUID(int=self.rng.getrandbits(128))),
            f"Student {len(self.pool):05d}",
            _near(self.rng, 12),
        )
        self.pool.append(student)
        return student


def payment_metadata(
    rng: random.Random, students: Students, courses: list[dict[str, Any]]
) -> dict[str, str]:
    student_id, name, (lat, lon) = students.pick()
    course = rng.choice(courses)
    start = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=rng.randint(1, 45))
    hour = rng.randint(9, 18)
    slot = f"{hour:02d}:{rng.choice(['00', '30'])}"
    if rng.random() < 0.3:
        slot = f"{(hour - 1) % 12 + 1}:00 {'AM' if hour < 12 else 'PM'}"
    return {
        "student_id": student_id,
        "student_name": name,
        "course_id": course["id"],
        "total_sessions": rng.choice(["10", "20", "30"]),
        "delivery_mode": "SUNDAY_ONLY" if rng.random() < 0.25 else "WEEKDAY_DAILY",
        "start_date": start.isoformat(),
        "time_slot": slot,
        "latitude": str(lat),
        "longitude": str(lon),
    }


# --- processes ---------------------------------------------------------------------


@dataclass
class Stack:
    """gunicorn and workers against ``database``, with logs under ``run_dir``."""

    database: Database
    run_dir: Path
    web_workers: int = 4
    worker_concurrency: int = 4
    port: int = field(default_factory=free_port)
    webhook_secret: str = field(
        default_factory=lambda: "whsec_" + secrets.token_hex(16)
    )
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    extra_env: dict[str, str] = field(default_factory=dict)
    # The checkout whose code runs (the benchmark compares an older commit's).
    project: Path = ROOT
    web: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _log_files: list[Any] = field(default_factory=list)
    _started_workers: int = 0

    @property
    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "PGDATABASE", "PGHOST"))
        }
        env.update(
            DATABASE_URL=self.database.url,
            DJANGO_DEBUG="0",
            DJANGO_SECRET_KEY=secrets.token_urlsafe(40),
            DJANGO_ALLOWED_HOSTS=HOST,
            STRIPE_WEBHOOK_SECRET=self.webhook_secret,
            FULFILMENT_API_TOKEN=self.api_token,
            WORKER_CONCURRENCY=str(self.worker_concurrency),
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def prepare(self, catalogue_data: dict[str, Any]) -> None:
        """A fresh database with the schema and ``catalogue_data``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.database.start()
        self.manage("migrate", "--noinput", "-v", "0")
        path = self.run_dir / "catalogue.json"
        path.write_text(json.dumps(catalogue_data))
        self.manage("import_catalog", str(path))
        self._sql("VACUUM ANALYZE")

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(
                f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def start_web(self) -> None:
        self.web = self._spawn(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "kcproject.wsgi:application",
                "--bind",
                f"{HOST}:{self.port}",
                "--workers",
                str(self.web_workers),
                "--timeout",
                "30",
                "--graceful-timeout",
                "5",
                "--log-level",
                "warning",
            ],
        )
        self._wait_for(lambda: self._http_ok("/webhooks/stripe/", allow=(405,)), "web")

    def start_worker(self, *, queues: str | None = None) -> subprocess.Popen[bytes]:
        args = [sys.executable, "manage.py", "procrastinate", "worker"]
        if queues:
            args += ["--queues", queues]
        process = self._spawn(f"worker-{self._started_workers}", args)
        self._started_workers += 1
        self.workers.append(process)
        return process

    def wait_workers_ready(self, count: int) -> None:
        """Until ``count`` worker rows beat in procrastinate_workers."""

        def ready() -> bool:
            rows = self._sql(
                "SELECT count(*) FROM procrastinate_workers "
                "WHERE last_heartbeat > now() - interval '5 seconds'"
            )
            return int(rows[0][0]) >= count

        self._wait_for(ready, f"{count} workers")

    def kill_worker(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.workers.remove(process)

    def stop(self) -> None:
        processes = [*self.workers, *([self.web] if self.web else [])]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 30
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.workers.clear()
        self.web = None
        for handle in self._log_files:
            handle.close()
        self._log_files.clear()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.run_dir / f"{name}.log").open("ab")
        self._log_files.append(log)
        return subprocess.Popen(
            args,
            cwd=self.project,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _sql(self, query: str) -> list[tuple[Any, ...]]:
        with self.database.connect() as conn:
            cursor = conn.execute(query)
            return cursor.fetchall() if cursor.description else []

    def _http_ok(self, path: str, *, allow: tuple[int, ...] = (200,)) -> bool:
        try:
            conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
        except OSError:
            return False
        return status in allow

    def _wait_for(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.web is not None and self.web.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.run_dir}/web.log")
            with contextlib.suppress(psycopg.Error):
                if check():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready after {READY_TIMEOUT:.0f}s")


# --- the pipeline's progress ---------------------------------------------------------

PIPELINE_TASKS = ("allocate_trainer", "materialise_sessions", "refresh_learnings")


def pipeline_busy(conn: psycopg.Connection[Any]) -> int:
    """Pipeline jobs todo or doing plus purchases waiting for their allocation:
    0 once every payment received so far has been carried through."""
    row = conn.execute(
        """
        SELECT (SELECT count(*) FROM procrastinate_jobs
                WHERE status IN ('todo', 'doing')
                  AND split_part(task_name, '.', -1) = ANY(%s))
             + (SELECT count(*) FROM fulfillment_purchase
                WHERE status = 'allocation_pending')
        """,
        [list(PIPELINE_TASKS)],
    ).fetchone()
    return int(row[0]) if row else 0


# --- delivering events like Stripe ---------------------------------------------


@dataclass
class Attempt:
    started: float
    ended: float
    status: int | None  # None: no answer (refused, reset, timed out)
    body: dict[str, Any]


@dataclass
class Delivery:
    """One event as Stripe would deliver it, until it gets a 2xx or 4xx answer."""

    kind: str
    payment_intent: str
    event: dict[str, Any] | None = None
    raw: bytes | None = None  # sent as is (malformed bodies)
    signature: Callable[[bytes], str] | None = None  # bad or stale signatures
    then: list[tuple[float, Delivery]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def answer(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


@dataclass
class Sender:
    """Delivers events to the webhook; each is retried with exponential backoff
    (0.25 s doubling up to 4 s) while it gets no answer or a 5xx, for at most
    ``give_up_after`` seconds, as Stripe retries (on a faster clock)."""

    port: int
    secret: str
    threads: int = 64
    timeout: float = 10.0
    give_up_after: float = 180.0
    deliveries: list[Delivery] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor | None = None
    _pending: int = 0
    _idle: threading.Condition = field(default_factory=threading.Condition)

    def __enter__(self) -> Sender:
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="stripe")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)

    def submit(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        if self._pool is None:
            raise RuntimeError("use the sender as a context manager")
        with self._idle:
            self._pending += 1
        with self._lock:
            self.deliveries.append(delivery)
        self._pool.submit(self._deliver, delivery, delay)

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def post(self, body: bytes, signature: str) -> Attempt:
        started = time.monotonic()
        status: int | None = None
        answer: dict[str, Any] = {}
        try:
            conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            conn.request(
                "POST",
                WEBHOOK_PATH,
                body=body,
                headers={
                    "Content-Type": "application/json",
                    "Stripe-Signature": signature,
                },
            )
            response = conn.getresponse()
            data = response.read()
            status = response.status
            conn.close()
            with contextlib.suppress(ValueError):
                parsed = json.loads(data)
                answer = parsed if isinstance(parsed, dict) else {}
        except (OSError, http.client.HTTPException):
            status = None
        return Attempt(started, time.monotonic(), status, answer)

    def _deliver(self, delivery: Delivery, delay: float) -> None:
        try:
            if delay:
                time.sleep(delay)
            first = time.monotonic()
            backoff = 0.25
            while True:
                body = delivery.raw or json.dumps(delivery.event).encode()
                signature = (
                    delivery.signature(body)
                    if delivery.signature
                    else stripe_events.signature_header(body, secret=self.secret)
                )
                attempt = self.post(body, signature)
                delivery.attempts.append(attempt)
                if attempt.status is not None and attempt.status < 500:
                    break
                if time.monotonic() - first > self.give_up_after:
                    break
                time.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 4.0)
            if delivery.attempts[-1].status == 200:
                for follow_delay, follow in delivery.then:
                    self.submit(follow, delay=follow_delay)
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def print_table(rows: list[tuple[str, object]], *, title: str) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}")
    print(f"  {'-' * (width + 14)}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value!s:>10}")
    print(f"  {'-' * (width + 14)}", flush=True)


# --- CPU of the stack's processes, from /proc ---------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stats() -> list[tuple[int, int, int, float, float]]:
    """(pid, ppid, session id, own CPU s, waited-for children's CPU s) of every
    process /proc lets us read."""
    stats = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                text = handle.read()
        except OSError:
            continue  # exited meanwhile
        # The command name (field 2) may hold spaces: split after its ")".
        fields = text[text.rindex(")") + 2 :].split()
        ppid, session = int(fields[1]), int(fields[3])
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        stats.append(
            (
                int(entry),
                ppid,
                session,
                (utime + stime) / CLOCK_TICKS,
                (cutime + cstime) / CLOCK_TICKS,
            )
        )
    return stats


def postmaster_pid(conn: psycopg.Connection[Any]) -> int | None:
    """The PostgreSQL server's postmaster (the parent of our backend), when it
    runs on this machine and /proc shows it."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    if row is None:
        return None
    try:
        with open(f"/proc/{row[0]}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[1])


def cpu_seconds(
    *, web: int | None, workers: list[int], postmaster: int | None
) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each group of the stack.

    A group is every live process of the gunicorn session (master and workers),
    of the worker processes' sessions, and the postmaster with its children
    (backends, checkpointer, WAL writer...); its leaders' reaped children count
    too, so a backend that exited during the window is not lost.
    """
    groups = {"web": 0.0, "workers": 0.0, "postgres": 0.0}
    worker_sessions = set(workers)
    for pid, ppid, session, own, reaped in _proc_stats():
        if web is not None and session == web:
            groups["web"] += own + (reaped if pid == web else 0.0)
        elif session in worker_sessions:
            groups["workers"] += own + (reaped if pid in worker_sessions else 0.0)
        elif postmaster is not None and (pid == postmaster or ppid == postmaster):
            groups["postgres"] += own + (reaped if pid == postmaster else 0.0)
    return groups


def own_cpu_seconds() -> float:
    """This process's CPU (the load generator: the sender's threads)."""
    times = os.times()
    return times.user + times.system
