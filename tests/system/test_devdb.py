"""tools/devdb.py: the embedded PostgreSQL server used when DATABASE_URL is unset.

These tests start real servers in a private data dir; they need no Django database.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers import ROOT
from tools import devdb

# Run as the Makefile runs it, from the repository root.
DEVDB = [sys.executable, "-m", "tools.devdb"]

DBNAME = "devdb_test"


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    # Not tmp_path: as root the server runs as `nobody`, who cannot enter
    # /tmp/pytest-of-root (0700). mkdtemp makes a 0700 directory too, hence chmod.
    path = Path(tempfile.mkdtemp(prefix="devdb-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    devdb.stop(path)
    shutil.rmtree(path, ignore_errors=True)


def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEVDB, *args],
        cwd=ROOT,
        env=env if env is not None else environ_without_database_url(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def environ_without_database_url() -> dict[str, str]:
    # `make test` may itself run under `tools.devdb exec`, which sets DATABASE_URL.
    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    except FileNotFoundError:
        return None


def test_start_creates_a_database_psycopg_can_use(data_dir: Path) -> None:
    url = devdb.start(data_dir, DBNAME)

    assert url == f"postgres://postgres@/{DBNAME}?host={data_dir / 'run'}"
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SELECT current_database()").fetchone() == (DBNAME,)
        # No TCP listener: nothing to collide with a system PostgreSQL.
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert conn.execute("SHOW max_connections").fetchone() == ("200",)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        conn.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'btree_gist'"
        ).fetchone() == (1,)


def test_listen_notify_round_trip(data_dir: Path) -> None:
    url = devdb.start(data_dir, DBNAME)

    with (
        psycopg.connect(url, autocommit=True) as listener,
        psycopg.connect(url, autocommit=True) as sender,
    ):
        listener.execute("LISTEN devdb_channel")
        sender.execute("NOTIFY devdb_channel, 'job 42'")
        received = [
            (n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=1)
        ]

    assert received == [("devdb_channel", "job 42")]


def test_start_twice_keeps_the_same_server_and_database(data_dir: Path) -> None:
    first_url = devdb.start(data_dir, "Mixed-Case db")
    first_pid = postmaster_pid(data_dir)

    second_url = devdb.start(data_dir, "Mixed-Case db")

    assert second_url == first_url
    assert postmaster_pid(data_dir) == first_pid
    with psycopg.connect(first_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (
            "Mixed-Case db",
        )


def test_restart_keeps_committed_data(data_dir: Path) -> None:
    url = devdb.start(data_dir, DBNAME)
    with psycopg.connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS survivor")
        conn.execute("CREATE TABLE survivor (name text)")
        conn.execute("INSERT INTO survivor VALUES ('still here')")
    pid_before = postmaster_pid(data_dir)

    assert devdb.restart(data_dir, DBNAME) == url

    assert postmaster_pid(data_dir) != pid_before
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT name FROM survivor").fetchall() == [("still here",)]


def test_stop_then_status_says_not_running(data_dir: Path) -> None:
    devdb.start(data_dir, DBNAME)
    assert run_cli("status", "--data-dir", str(data_dir)).returncode == 0

    assert devdb.stop(data_dir) is True
    assert devdb.stop(data_dir) is False  # stopping a stopped server is no error

    assert devdb.is_running(data_dir) is False
    assert postmaster_pid(data_dir) is None
    status = run_cli("status", "--data-dir", str(data_dir))
    assert status.returncode == 3
    assert status.stdout.count("\n") == 1
    assert "not running" in status.stdout


def test_stale_postmaster_pid_after_a_crash_does_not_block_start(
    data_dir: Path,
) -> None:
    devdb.start(data_dir, DBNAME)
    pid_file = data_dir / "postgres" / "postmaster.pid"
    contents = pid_file.read_text().splitlines(keepends=True)
    devdb.stop(data_dir)
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file.write_text("".join([f"{dead.pid}\n", *contents[1:]]))

    assert devdb.is_running(data_dir) is False
    url = devdb.start(data_dir, DBNAME)

    assert postmaster_pid(data_dir) not in (None, dead.pid)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_start_after_the_postmaster_was_killed_recovers_committed_data(
    data_dir: Path,
) -> None:
    url = devdb.start(data_dir, DBNAME)
    with psycopg.connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS crash_survivor")
        conn.execute("CREATE TABLE crash_survivor (name text)")
        conn.execute("INSERT INTO crash_survivor VALUES ('committed')")
    killed = postmaster_pid(data_dir)
    assert killed is not None

    # Left as a zombie until init reaps it: pg_ctl and postgres would both take it
    # for a live server.
    os.kill(killed, signal.SIGKILL)
    devdb.start(data_dir, DBNAME)

    assert postmaster_pid(data_dir) not in (None, killed)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT name FROM crash_survivor").fetchall() == [
            ("committed",)
        ]


def test_exec_sets_database_url_returns_exit_code_and_stops_server(
    data_dir: Path,
) -> None:
    devdb.stop(data_dir)
    child = (
        "import os, sys, psycopg\n"
        "url = os.environ['DATABASE_URL']\n"
        "print(url)\n"
        "print(psycopg.connect(url).execute('SELECT 40 + 2').fetchone()[0])\n"
        "sys.exit(7)\n"
    )

    result = run_cli(
        "exec", "--data-dir", str(data_dir), "--dbname", DBNAME,
        "--", sys.executable, "-c", child,
    )  # fmt: skip

    assert result.returncode == 7, result.stderr
    assert result.stdout.split() == [devdb.database_url(data_dir, DBNAME), "42"]
    assert devdb.is_running(data_dir) is False
    assert postmaster_pid(data_dir) is None


def test_exec_leaves_running_a_server_it_did_not_start(data_dir: Path) -> None:
    devdb.start(data_dir, DBNAME)
    pid = postmaster_pid(data_dir)

    result = run_cli("exec", "--data-dir", str(data_dir), "--", "true")

    assert result.returncode == 0, result.stderr
    assert devdb.is_running(data_dir) is True
    assert postmaster_pid(data_dir) == pid


def test_exec_with_database_url_set_does_not_touch_the_server(data_dir: Path) -> None:
    devdb.stop(data_dir)
    env = {**os.environ, "DATABASE_URL": "postgres://app@db.example/other"}

    result = run_cli(
        "exec", "--data-dir", str(data_dir),
        "--", sys.executable, "-c", "import os; print(os.environ['DATABASE_URL'])",
        env=env,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "postgres://app@db.example/other"
    assert devdb.is_running(data_dir) is False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_exec_reaches_the_command_and_stops_the_server(
    data_dir: Path, signum: signal.Signals
) -> None:
    devdb.stop(data_dir)
    # Its own session: no controlling terminal, so devdb must relay the signal.
    script = subprocess.Popen(
        [
            *DEVDB, "exec", "--data-dir", str(data_dir),
            "--", sys.executable, "-c",
            "import os, time; print(os.getpid(), flush=True); time.sleep(30)",
        ],
        cwd=ROOT,
        env=environ_without_database_url(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    assert script.stdout is not None
    command_pid = int(script.stdout.readline())

    script.send_signal(signum)

    try:
        _, stderr = script.communicate(timeout=20)
    finally:
        script.kill()
    assert script.returncode == 128 + signum, stderr
    with pytest.raises(ProcessLookupError):
        os.kill(command_pid, 0)
    assert devdb.is_running(data_dir) is False
    assert postmaster_pid(data_dir) is None


def test_url_prints_the_database_url(data_dir: Path) -> None:
    result = run_cli("url", "--data-dir", str(data_dir), "--dbname", "shop")

    assert result.returncode == 0
    assert result.stdout == f"postgres://postgres@/shop?host={data_dir}/run\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to nobody")
def test_data_dir_nobody_cannot_enter_fails_naming_the_directory(
    data_dir: Path,
) -> None:
    private = data_dir / "private"
    (private / "data").mkdir(parents=True)
    private.chmod(0o700)

    with pytest.raises(devdb.DevDbError, match=f"cannot enter {private} "):
        devdb.start(private / "data")

    assert not (private / "data" / "postgres" / "PG_VERSION").exists()
