"""Workers on other hosts (network namespaces), one cut off mid-job and healed,
and a slow link: ``make partition``'s scenario, shortened (tools/partition.py)."""

from __future__ import annotations

import os

import pytest

from tests.helpers import ROOT
from tools import netns, partition


@pytest.mark.slow
def test_a_host_cut_off_mid_job_loses_nothing_and_applies_nothing_twice() -> None:
    missing = netns.missing()
    if missing:
        message = "the partition test needs " + "; ".join(missing)
        if os.geteuid() == 0:
            # As root (CI is) namespaces can be made: missing is a failure.
            pytest.fail(message)
        pytest.skip(message)
    options = partition.Options(
        cut_s=20,
        dead_peer_s=8,
        latency_payments=3,
        during_cut_payments=2,
        trainers=100,
        data_dir=ROOT / ".data" / "partition-test",
    )

    result = partition.run(options)

    rows = dict(result.rows)
    print("\n".join(f"{name}: {value}" for name, value in result.rows))
    assert result.problems == []
    assert rows["cut: host-a xact at heal"] == "aborted"
    assert rows["cut: doctor named host-a lost"] is True
    assert float(str(rows["cut: job rescued, succeeded after s"])) <= 30
    assert rows["end: purchase faults"] == 0
