"""A worker whose heartbeat stopped (a host cut off, a process killed) is named,
with its host, by ``doctor`` and the dashboard until its row is pruned."""

from __future__ import annotations

import html
import re

import pytest
from django.db import connection
from django.test import Client

from fulfillment.models import WorkerPresence
from fulfillment.ops.health import check_workers
from fulfillment.selectors.workers import live_workers, lost_workers
from tests.helpers import sign_in

pytestmark = pytest.mark.django_db


def worker(*, host: str, silent_for_s: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat)"
            " VALUES (now() - make_interval(secs => %s)) RETURNING id",
            [silent_for_s],
        )
        worker_id: int = cursor.fetchone()[0]
    WorkerPresence.objects.create(worker_id=worker_id, host=host, pid=4242)
    return worker_id


def test_a_silent_worker_is_lost_not_live() -> None:
    alive = worker(host="host-b", silent_for_s=1)
    lost = worker(host="host-a", silent_for_s=14)
    worker(host="long-gone", silent_for_s=7200)

    assert [w.worker_id for w in live_workers()] == [alive]
    assert [(w.worker_id, w.host) for w in lost_workers()] == [(lost, "host-a")]


def test_doctor_names_the_lost_host() -> None:
    worker(host="host-b", silent_for_s=1)
    lost = worker(host="host-a", silent_for_s=14)

    check = check_workers()

    assert check.summary == "1 alive, 1 lost"
    assert any(
        re.fullmatch(rf"lost: worker {lost} on host-a:4242, no heartbeat for 1\ds", d)
        for d in check.details
    ), check.details


def test_dashboard_names_the_lost_host(client: Client) -> None:
    worker(host="host-b", silent_for_s=1)
    worker(host="host-a", silent_for_s=14)
    sign_in(client, "Operations")

    page = html.unescape(client.get("/admin/").content.decode())

    workers = page.split("Workers (1 alive)", 1)[1].split('<div id="module_', 1)[0]
    assert re.search(r'<tr class="ops-lost">.*host-a:4242.*lost', workers, re.S)
