"""The short chaos run of ``make chaos``: a few hundred payments with duplicates,
refunds and bad deliveries through gunicorn, three real workers, one SIGKILLed
mid-run; then the invariants, checked in SQL by tools/chaos.py itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.db import connection

from tests.helpers import ROOT, database_url_for_tests

pytestmark = pytest.mark.slow


def test_short_chaos_run_keeps_every_invariant(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.chaos",
            "--payments=300",
            "--rate=30",
            "--kills=1",
            "--kill-every=4",
            "--no-restart",
            "--lock-trainer-for=9",
            f"--database-url={database_url_for_tests()}",
            # Named after this run's own database, so parallel checkouts sharing
            # one server never meet.
            f"--dbname={connection.settings_dict['NAME']}_chaos_{os.getpid()}",
            f"--run-dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["payments"] == 300
    assert report["duplicates"] > 0
    assert report["bad deliveries"] > 0
    assert report["race refunds"] > 0
    assert report["partial refunds"] > 0
    assert report["refunds without PI"] > 0
    assert report["partly refunded"] > 0
    assert report["kills"] == 1
    assert report["allocated"] > 250
    assert report["trainer lock held s"] >= 8
    assert report["allocated while locked"] > 0
    assert report["doctor named holder"] is True
    for invariant in (
        "lost",
        "partial unrecorded",
        "double",
        "bad purchases",
        "overlaps",
        "over capacity",
        "jobs left",
        "failed jobs",
        "unexpected answers",
    ):
        assert report[invariant] == 0, invariant
    assert report["problems"] == []
    assert "every invariant held" in result.stdout
