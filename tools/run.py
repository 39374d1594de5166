"""``make run``: the whole service on one machine, in one terminal.

1. a database: DATABASE_URL if set, else the embedded server (tools/devdb.py);
2. migrations, the demo catalogue and an ``admin`` superuser (all idempotent),
   and with DJANGO_DEBUG=0 the static files WhiteNoise serves (collectstatic);
3. the web app on http://127.0.0.1:8000 and one ``procrastinate worker``;
4. a worker that exits (procrastinate stops one whose database connection
   broke) is replaced, as compose's restart policy does;
5. Ctrl-C (or SIGTERM) stops both, the worker gracefully, then the embedded
   database if this script started it: no process is left behind.

Schema, web and worker come up together or not at all: the old system's workers
"existed in code but were never deployed".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from tools import devdb

ROOT = Path(__file__).resolve().parent.parent
HOST, PORT = "127.0.0.1", int(os.environ.get("PORT", "8000"))
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
WORKER_RESTART_DELAY = 2.0


class Stop(Exception):
    pass


def manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, check=True)


def spawn(*args: str) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl-C reaches only this script, which then stops the
    # children once, in order. A worker hit by two signals would abort its jobs.
    return subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=ROOT, start_new_session=True
    )


def wait_ready(web: subprocess.Popen[bytes], worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    url = f"http://{HOST}:{PORT}/healthz"
    while time.monotonic() < deadline:
        for name, process in (("web", web), ("worker", worker)):
            if process.poll() is not None:
                raise SystemExit(f"run: the {name} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise SystemExit(f"run: not healthy after {READY_TIMEOUT:.0f}s; see {url}")


def collect_static_if_served_from_it() -> None:
    """With DEBUG off, WhiteNoise serves only what collectstatic wrote (hashed
    names from its manifest); with DEBUG on it reads the apps' files directly."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kcproject.settings")
    from django.conf import settings

    if not settings.DEBUG:
        manage("collectstatic", "--noinput", "-v", "0")


def banner(database: str, *, stops_database: bool) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kcproject.settings")
    from django.conf import settings

    print(
        f"""
  Fulfilment service is up ({database}).
    Admin:          http://{HOST}:{PORT}/admin/
    Login:          user {ADMIN_USER!r}, password {ADMIN_PASSWORD!r}
    Webhook:        POST http://{HOST}:{PORT}/webhooks/stripe/
    Webhook secret: {settings.STRIPE_WEBHOOK_SECRET}
    API token:      {settings.FULFILMENT_API_TOKEN}
    Health:         http://{HOST}:{PORT}/healthz
  Send a signed test payment:  .venv/bin/python manage.py send_test_payment
  Ctrl-C stops the web app, the worker{" and the database" if stops_database else ""}.
""",
        flush=True,
    )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()  # the worker finishes running jobs first
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise Stop

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started_database = False
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if os.environ.get("DATABASE_URL"):
            database = "DATABASE_URL"
        else:
            started_database = not devdb.is_running()
            os.environ["DATABASE_URL"] = devdb.start()
            database = "embedded PostgreSQL under .data/"
        manage("migrate", "--noinput", "-v", "0")
        collect_static_if_served_from_it()
        manage("seed_demo")
        manage("ensure_admin", "--username", ADMIN_USER, "--password", ADMIN_PASSWORD)
        web = spawn("runserver", f"{HOST}:{PORT}", "--noreload")
        processes.append(web)
        processes.append(spawn("procrastinate", "worker"))
        wait_ready(web, processes[-1])
        banner(database, stops_database=started_database)
        while web.poll() is None:
            time.sleep(0.5)
            worker = processes[-1]
            if worker.poll() is not None:
                # procrastinate stops a worker whose database connection broke
                # (a PostgreSQL restart, say): like compose's restart policy, start
                # another; its jobs are rescued or retried.
                print(
                    f"run: the worker exited with {worker.returncode}; starting "
                    f"another in {WORKER_RESTART_DELAY:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(WORKER_RESTART_DELAY)
                processes[-1] = spawn("procrastinate", "worker")
        print("run: the web app exited; stopping the rest", file=sys.stderr)
        return 1
    except Stop:
        print("\nrun: stopping ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(processes)
        if started_database:
            devdb.stop()
        print("run: stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
