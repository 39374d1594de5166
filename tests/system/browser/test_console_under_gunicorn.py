"""The console as production serves it: gunicorn with DJANGO_DEBUG=0, static
files collected by ``collectstatic`` and served by WhiteNoise (no runserver, no
staticfiles finders). Before WhiteNoise the admin came up without any CSS."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import global_settings
from django.contrib.auth.models import User

from tests.helpers import ROOT, database_url_for_tests, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOST = "127.0.0.1"
# admin/css/base.css: #header { background: var(--header-bg) }, #417690.
ADMIN_HEADER_BACKGROUND = "rgb(65, 118, 144)"


def _free_port() -> int:
    # gunicorn cannot bind port 0 and report it: ask the kernel for a free one.
    # Another process could take it before gunicorn binds; gunicorn then exits
    # and the readiness poll below fails saying so.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (our http URL)
            return True
    except urllib.error.HTTPError:
        return True  # /healthz is 503 without a worker: the server is up
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture
def production_server(transactional_db: None, tmp_path: Path) -> Iterator[str]:
    """gunicorn on the test database with DEBUG off, as compose runs it; the
    static files collected first, as the Dockerfile does."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_tests(),
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
        "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(16),
        "FULFILMENT_API_TOKEN": secrets.token_urlsafe(24),
        "DJANGO_ALLOWED_HOSTS": HOST,
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        # Secure cookies would not come back over plain http://: no login.
        "DJANGO_SECURE_COOKIES": "0",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    assert (tmp_path / "static" / "staticfiles.json").is_file()
    port = _free_port()
    log = tmp_path / "gunicorn.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "kcproject.wsgi:application",
            f"--bind={HOST}:{port}",
            "--workers=1",
            "--timeout=30",
            "--graceful-timeout=5",
            "--access-logfile=-",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://{HOST}:{port}"
    try:

        def up() -> bool:
            assert process.poll() is None, f"gunicorn exited:\n{log.read_text()}"
            return _answers(f"{url}/healthz")

        wait_until(up, timeout=30, interval=0.2, what="gunicorn answering")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_the_console_is_styled_under_gunicorn_with_debug_off(
    production_server: str,
    page: Page,
    artifacts: Path,
    settings: Any,
) -> None:
    from playwright.sync_api import expect

    # conftest.py hashes with MD5 for speed; gunicorn's settings do not know it.
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    User.objects.create_user(
        username="olivia",
        password="a-long-test-password",
        is_staff=True,
        is_superuser=True,
    )

    page.goto(f"{production_server}/admin/")
    page.fill("#id_username", "olivia")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("olivia")

    # The stylesheet is the hashed copy from collectstatic's manifest ...
    href = page.locator('link[rel="stylesheet"][href*="admin/css/base"]').first
    stylesheet = href.get_attribute("href") or ""
    assert stylesheet.startswith("/static/admin/css/base.")
    assert stylesheet != "/static/admin/css/base.css", "not the manifest's name"
    # ... served by WhiteNoise as CSS, cacheable for good since the name is hashed ...
    response = page.request.get(f"{production_server}{stylesheet}")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/css")
    assert "immutable" in response.headers.get("cache-control", "")
    assert "--header-bg" in response.text()
    # ... and applied: the header has admin's colour, not the browser's default.
    background = page.evaluate(
        "getComputedStyle(document.querySelector('#header')).backgroundColor"
    )
    assert background == ADMIN_HEADER_BACKGROUND
    # django-admin-tools' own dashboard CSS is served too.
    tools_css = page.locator('link[rel="stylesheet"][href*="admin_tools/"]')
    assert tools_css.count() >= 1
    for index in range(tools_css.count()):
        tools_href = tools_css.nth(index).get_attribute("href") or ""
        answer = page.request.get(f"{production_server}{tools_href}")
        assert answer.status == 200, tools_href
        assert answer.headers["content-type"].startswith("text/css"), tools_href
    page.screenshot(path=artifacts / "console-under-gunicorn.png", full_page=True)
