"""The short failover of ``make failover``: two PostgreSQL servers of the run's
own, a synchronous standby promoted after the primary is SIGKILLed under a
steady payment load; the invariants checked in SQL by tools/failover.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

POSTGRES_15 = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Not tmp_path: as root the servers run as `nobody`, who cannot enter
    # /tmp/pytest-of-root (0700).
    path = Path(tempfile.mkdtemp(prefix="failover-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_failover_under_load_loses_no_acknowledged_payment(run_dir: Path) -> None:
    # This machine's PostgreSQL where it has one, else the embedded one.
    postgres = "system" if (POSTGRES_15 / "postgres").is_file() else "embedded"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.failover",
            "--payments=120",
            "--rate=15",
            "--trainers=150",
            "--promote-after=1",
            f"--postgres={postgres}",
            f"--run-dir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((run_dir / "report.json").read_text())
    assert report["problems"] == []
    assert report["acknowledged"] >= 120
    assert report["answers 503"] > 0  # the primary really went away under load
    assert report["acknowledged lost"] == 0
    assert report["lost"] == 0
    assert report["double"] == 0
    assert report["overlaps"] == 0
    assert report["jobs left"] == 0
    assert report["jobs still doing"] == 0
    assert report["left unfinished"] == 0
    assert report["rescued jobs"] == report["doing at promotion"]
    assert 0 <= report["first 200 after promotion s"] <= 30
    assert 0 <= report["workers again after promotion s"] <= 30
    assert "no acknowledged payment lost" in result.stdout
