"""docker-compose.yml, Dockerfile and .env.example, checked without a Docker engine.

- the compose file is valid against the Compose Specification's JSON schema
  (vendored in tests/schemas/, see its README for where it came from);
- the services are the ones CONTRACT §1 names, wired in the right order, and the
  worker can be scaled;
- every command a container runs names something that exists in this project: a
  Django management command (with arguments its parser accepts) or an importable
  WSGI application; the files the Dockerfile copies exist;
- every variable the compose file or .env.example sets is one the settings read;
- compose refuses to start without real secrets (``${VAR:?message}``), and every
  service that runs the app does so with DJANGO_DEBUG=0. Compose's interpolation is
  re-implemented here from the Compose Specification, as no Docker engine or
  compose plugin is needed; where ``docker compose`` exists it is asked too.

No database is needed: nothing here requests the ``db`` fixture.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from referencing import Registry, Resource

from kcproject.settings import database_session_settings
from tests.helpers import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"

SERVICES = {"db", "pgbouncer", "migrate", "web", "worker"}
APP_SERVICES = ("migrate", "web", "worker")

# CONTRACT §2, which .env.example must document in full.
CONTRACT_VARIABLES = frozenset(
    {
        "DATABASE_URL",
        "STRIPE_WEBHOOK_SECRET",
        "FULFILMENT_API_TOKEN",
        "TIME_ZONE",
        "DJANGO_SECRET_KEY",
        "DJANGO_DEBUG",
        "DJANGO_ALLOWED_HOSTS",
    }
)
# Every variable the settings read: a name set in the compose file or .env.example
# must be one of these, so a typo fails here instead of being silently ignored.
# test_known_variables_are_read_by_the_settings keeps this list honest.


def _variables_the_settings_read() -> frozenset[str]:
    """Every NAME in an ``env_*("NAME", …)`` call of kcproject/settings.py: the
    settings read the environment only through kcproject/env.py's readers."""
    tree = ast.parse((ROOT / "kcproject" / "settings.py").read_text())
    return frozenset(
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id.startswith("env_")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


SETTINGS_VARIABLES = CONTRACT_VARIABLES | _variables_the_settings_read()
# Secrets compose must be given: the settings' three, and the database password.
COMPOSE_SECRETS = (
    "DJANGO_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "FULFILMENT_API_TOKEN",
    "POSTGRES_PASSWORD",
)
# Read by compose itself (interpolation), not by the settings.
COMPOSE_VARIABLES = frozenset({"POSTGRES_PASSWORD"})

_ENV_ASSIGNMENT = re.compile(r"^\s*(?:#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
_INTERPOLATION = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)[^}]*\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# --- loading -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def django_ready() -> None:
    """Django's app registry, without a database (pytest-django has usually done it)."""
    import django
    from django.apps import apps

    if not apps.ready:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kcproject.settings")
        django.setup()


def _validator(schema: dict[str, Any]) -> Any:
    """The validator of the draft the schema declares; every $ref stays inside it."""
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    registry: Registry[Any] = Registry().with_resource(
        schema.get("$id", "compose_spec.json"), Resource.from_contents(schema)
    )
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _schema_errors(schema: dict[str, Any], document: Any) -> list[str]:
    errors = _validator(schema).iter_errors(document)
    return sorted(
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in errors
    )


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a line continuation"
    return instructions


def _exec_form(arguments: str) -> list[str]:
    if arguments.startswith("["):
        parsed = json.loads(arguments)
        assert all(isinstance(part, str) for part in parsed), arguments
        return list(parsed)
    return shlex.split(arguments)


def _dockerfile_cmd() -> list[str]:
    cmds = [args for keyword, args in _dockerfile_instructions() if keyword == "CMD"]
    assert cmds, "the Dockerfile has no CMD"
    return _exec_form(cmds[-1])


def _effective_command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    return _argv(command) if command is not None else _dockerfile_cmd()


def _seconds(duration: str) -> float:
    parts = _DURATION_PART.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, (
        f"{duration!r} is not a Compose duration such as 30s or 1m30s"
    )
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _dockerignore_patterns() -> list[str]:
    if not DOCKERIGNORE.exists():
        return []
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _dockerignored(relative: str) -> bool:
    """Whether .dockerignore keeps `relative` (or a folder above it) out of builds."""
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in _dockerignore_patterns():
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        candidates = prefixes
        if body.startswith("**/"):
            body = body[3:]
            candidates = [*prefixes, *parts]
        if any(fnmatch.fnmatchcase(c, body) for c in candidates):
            ignored = not negated
    return ignored


# --- (1) the Compose Specification ------------------------------------------------


def test_vendored_schema_is_the_compose_specification(schema: dict[str, Any]) -> None:
    assert schema["title"] == "Compose Specification"
    assert "$schema" in schema, "the schema must declare its JSON Schema draft"
    external = sorted({ref for ref in _refs(schema) if not ref.startswith("#")})
    assert not external, f"the schema refers outside itself: {external}"
    conditions = schema["$defs"]["workload_spec"]["properties"]["depends_on"]
    assert "service_completed_successfully" in json.dumps(conditions)
    assert '"required"' in json.dumps(schema["$defs"]["env_file"])


def test_compose_file_is_valid_against_the_compose_specification(
    schema: dict[str, Any], compose: dict[str, Any]
) -> None:
    errors = _schema_errors(schema, compose)
    assert not errors, "docker-compose.yml breaks the Compose Specification:\n" + (
        "\n".join(errors)
    )


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("worker", "replicas_typo", 4),
        ("web", "depends_on", {"migrate": {"condition": "service_finished"}}),
        ("migrate", "env_file", [{"required": False}]),
        ("db", "healthcheck", {"test": ["CMD", "true"], "interval": 5}),
    ],
)
def test_the_schema_check_catches_mistakes(
    schema: dict[str, Any],
    compose: dict[str, Any],
    service: str,
    key: str,
    value: Any,
) -> None:
    """The validator really applies the schema (nested refs, unknown keys, enums)."""
    broken = json.loads(json.dumps(compose))
    broken["services"][service][key] = value
    assert _schema_errors(schema, broken)


# --- (2) services and their order --------------------------------------------------


def test_services_are_db_pgbouncer_migrate_web_worker(
    services: dict[str, Any],
) -> None:
    assert set(services) == SERVICES


def test_db_is_postgres_16_with_a_healthcheck_and_a_named_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    db = services["db"]
    assert db["image"].split(":")[0] == "postgres"
    assert db["image"].split(":")[1].split(".")[0] == "16"
    test = _argv(db["healthcheck"]["test"])
    assert test[0] in {"CMD", "CMD-SHELL"}
    assert "pg_isready" in " ".join(test[1:])
    volume_sources = [str(v).split(":")[0] for v in db.get("volumes", [])]
    named = [
        source for source in volume_sources if source in compose.get("volumes", {})
    ]
    assert named, "the database must keep its data in a named volume"


def test_migrate_is_one_shot_after_the_database_is_healthy(
    services: dict[str, Any],
) -> None:
    migrate = services["migrate"]
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert migrate.get("restart") == "no"
    assert _argv(migrate["command"])[:3] == ["python", "manage.py", "migrate"]
    assert "seed_demo" not in " ".join(_argv(migrate["command"]))


@pytest.mark.parametrize("name", ["web", "worker"])
def test_web_and_worker_wait_for_migrate_to_complete(
    services: dict[str, Any], name: str
) -> None:
    depends_on = services[name]["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_app_services_share_one_image_configured_from_env(
    services: dict[str, Any],
) -> None:
    images = {services[name]["image"] for name in APP_SERVICES}
    builds = {
        json.dumps(services[name]["build"], sort_keys=True) for name in APP_SERVICES
    }
    assert len(images) == 1 and len(builds) == 1, "migrate, web and worker differ"
    for name in APP_SERVICES:
        service = services[name]
        env_files = service["env_file"]
        assert any(
            (entry == ".env") or (isinstance(entry, dict) and entry["path"] == ".env")
            for entry in (env_files if isinstance(env_files, list) else [env_files])
        ), f"{name} does not read .env"
        # web goes through the pooler; its direct URL, like everyone else's
        # DATABASE_URL, is the db service.
        key = "WORKER_DATABASE_URL" if name == "web" else "DATABASE_URL"
        url = service["environment"][key]
        assert re.match(r"postgres(ql)?://[^@/]+@db(:5432)?/", url), (
            f"{name}'s {key} does not point at the db service: {url}"
        )


# --- the pooler: web through PgBouncer in transaction mode, the rest direct ----------


def test_pgbouncer_is_a_pinned_image_pooling_transactions_for_the_db(
    services: dict[str, Any],
) -> None:
    pgbouncer = services["pgbouncer"]
    image, _, tag = pgbouncer["image"].partition(":")
    assert image == "edoburu/pgbouncer"
    assert re.fullmatch(r"v?\d+\.\d+\.\d+(-p\d+)?", tag), f"pin a version: {tag!r}"
    environment = pgbouncer["environment"]
    assert environment["POOL_MODE"] == "transaction"
    assert re.match(
        r"postgres://fulfilment:[^@]+@db:5432/fulfilment$", environment["DATABASE_URL"]
    )
    assert environment["AUTH_TYPE"] == "scram-sha-256"  # postgres:16's default
    # Startup options are not passed on: the settings must send none (below).
    assert "options" not in environment.get("IGNORE_STARTUP_PARAMETERS", "")
    assert pgbouncer["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert "pg_isready" in " ".join(_argv(pgbouncer["healthcheck"]["test"]))
    assert "ports" not in pgbouncer, "reachable on the compose network only"


def test_web_goes_through_the_pooler_and_waits_for_it(services: dict[str, Any]) -> None:
    web = services["web"]
    environment = web["environment"]
    assert re.match(
        r"postgres://[^@/]+@pgbouncer:5432/fulfilment$", environment["DATABASE_URL"]
    )
    assert environment["DATABASE_TRANSACTION_POOLER"] == "1"
    assert web["depends_on"]["pgbouncer"] == {"condition": "service_healthy"}
    assert web["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", ["migrate", "worker"])
def test_migrate_and_workers_connect_directly(
    services: dict[str, Any], name: str
) -> None:
    environment = services[name]["environment"]
    assert "@db:5432/" in environment["DATABASE_URL"]
    assert "DATABASE_TRANSACTION_POOLER" not in environment
    assert "pgbouncer" not in json.dumps(services[name])


def test_db_defaults_are_the_session_limits_the_pooled_web_cannot_send(
    services: dict[str, Any], django_ready: None
) -> None:
    from django.conf import settings

    command = _argv(services["db"]["command"])
    assert command[0] == "postgres"
    given = dict(
        value.split("=", 1)
        for flag, value in zip(command[1::2], command[2::2], strict=True)
        if flag == "-c"
    )
    wanted = database_session_settings(
        statement_timeout_s=settings.DATABASE_STATEMENT_TIMEOUT_S
    )
    for name in (
        "lock_timeout",
        "statement_timeout",
        "idle_in_transaction_session_timeout",
    ):
        assert given.get(name) == wanted[name], name


def test_worker_can_be_scaled(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker, "a fixed container name prevents --scale"
    assert "ports" not in worker, "a published host port prevents --scale"
    assert "scale" not in worker
    assert "replicas" not in worker.get("deploy", {})


def test_web_publishes_port_8000_and_checks_healthz(services: dict[str, Any]) -> None:
    web = services["web"]
    assert "8000:8000" in [str(port) for port in web["ports"]]
    test = _argv(web["healthcheck"]["test"])
    assert test[0] == "CMD" and test[1].startswith("python"), (
        "the slim image has no curl: probe with python"
    )
    code = test[test.index("-c") + 1]
    ast.parse(code)  # the probe itself must at least be valid Python
    assert "http://127.0.0.1:8000/healthz" in code


def test_stop_grace_periods_outlast_graceful_shutdowns(
    services: dict[str, Any], django_ready: None
) -> None:
    from django.conf import settings

    worker = services["worker"]
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    options = _manage_py_options(_argv(worker["command"]))
    worker_timeout = float(
        getattr(options, "shutdown_graceful_timeout", None)
        or settings.PROCRASTINATE_WORKER_DEFAULTS["shutdown_graceful_timeout"]
    )
    assert _seconds(worker["stop_grace_period"]) > worker_timeout

    web = services["web"]
    gunicorn_timeout = _gunicorn_options(_effective_command(web)).graceful_timeout
    assert _seconds(web.get("stop_grace_period", "10s")) > float(gunicorn_timeout or 30)


# --- (3) every command names something that exists ----------------------------


def _manage_py_options(argv: list[str]) -> Any:
    """Parse `python manage.py NAME ARGS` with the command's own parser."""
    from django.core.management import CommandError, get_commands, load_command_class

    assert argv[:2] == ["python", "manage.py"], argv
    assert (ROOT / "manage.py").is_file()
    name, arguments = argv[2], argv[3:]
    commands = get_commands()
    assert name in commands, f"`manage.py {name}` is not a management command"
    command = load_command_class(commands[name], name)
    parser = command.create_parser("manage.py", name)
    try:
        return parser.parse_args(arguments)
    except (CommandError, SystemExit) as error:
        pytest.fail(f"`manage.py {name}` refuses {arguments}: {error}")


def _gunicorn_options(argv: list[str]) -> Any:
    from gunicorn.config import Config  # type: ignore[import-untyped]

    assert argv[0] == "gunicorn", argv
    parser = Config(prog="gunicorn").parser()
    try:
        return parser.parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"gunicorn refuses {argv[1:]}")


def _check_gunicorn(argv: list[str]) -> None:
    options = _gunicorn_options(argv)
    assert len(options.args) == 1, f"gunicorn needs one APP_MODULE: {argv}"
    module_name, _, attribute = options.args[0].partition(":")
    module = importlib.import_module(module_name)
    assert hasattr(module, attribute or "application"), options.args[0]
    assert options.bind == ["0.0.0.0:8000"], "listen on every interface, port 8000"
    assert options.accesslog == "-", "access log to stdout"


def _check_command(argv: list[str]) -> None:
    if argv[:2] == ["python", "manage.py"]:
        _manage_py_options(argv)
    elif argv[0] == "gunicorn":
        _check_gunicorn(argv)
    else:
        pytest.fail(f"no check knows what {argv[0]!r} is: {argv}")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_service_command_names_something_that_exists(
    services: dict[str, Any], django_ready: None, name: str
) -> None:
    _check_command(_effective_command(services[name]))


def test_worker_runs_the_procrastinate_worker(
    services: dict[str, Any], django_ready: None
) -> None:
    argv = _argv(services["worker"]["command"])
    assert argv[2:4] == ["procrastinate", "worker"]
    assert _manage_py_options(argv).command == "worker"


def test_web_runs_gunicorn(services: dict[str, Any]) -> None:
    assert _effective_command(services["web"])[0] == "gunicorn"


def test_commands_the_compose_file_tells_people_to_run_exist(
    django_ready: None,
) -> None:
    from django.core.management import get_commands

    mentioned = set(re.findall(r"manage\.py\s+([a-z_]+)", COMPOSE_FILE.read_text()))
    assert mentioned, "docker-compose.yml runs no manage.py command"
    unknown = sorted(mentioned - set(get_commands()))
    assert not unknown, f"docker-compose.yml mentions unknown commands {unknown}"


def test_dockerfile_cmd_names_something_that_exists(django_ready: None) -> None:
    cmd = _dockerfile_cmd()
    assert cmd[0] == "gunicorn"
    _check_command(cmd)


def test_healthz_is_a_url_of_the_project(django_ready: None) -> None:
    from django.urls import Resolver404, resolve

    for path in ("/healthz", "/healthz/"):
        try:
            resolve(path)
        except Resolver404:
            continue
        return
    pytest.fail("/healthz, which the web healthcheck probes, is not routed")


def test_dockerfile_collects_static_files_for_debug_off_after_copying_the_code(
    django_ready: None,
) -> None:
    """WhiteNoise's manifest storage (DEBUG off) serves only what collectstatic
    wrote: the image must run it, with the settings compose runs (DEBUG off)."""
    instructions = _dockerfile_instructions()
    runs = [
        (index, shlex.split(arguments))
        for index, (keyword, arguments) in enumerate(instructions)
        if keyword == "RUN" and "collectstatic" in arguments
    ]
    assert len(runs) == 1, "the Dockerfile must run collectstatic once"
    index, words = runs[0]
    assignments = dict(
        word.split("=", 1) for word in words if re.match(r"^[A-Z_]+=", word)
    )
    argv = [word for word in words if not re.match(r"^[A-Z_]+=", word)]
    assert assignments.get("DJANGO_DEBUG") == "0"
    for secret in COMPOSE_SECRETS[:3]:
        assert assignments.get(secret), f"DEBUG off needs {secret} at build"
    options = _manage_py_options(argv)
    assert options.interactive is False, "collectstatic --noinput"
    copies_code = [
        i
        for i, (keyword, arguments) in enumerate(instructions)
        if keyword == "COPY" and _exec_form(arguments)[-2:-1] == ["."]
    ]
    assert copies_code and copies_code[0] < index, "collected before COPY . ."
    users = [i for i, (keyword, _) in enumerate(instructions) if keyword == "USER"]
    assert users and users[-1] < index, "collected as the user that runs the app"


def test_dockerfile_builds_a_non_root_python_311_slim_image() -> None:
    instructions = _dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert froms == ["python:3.11-slim"]
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert keywords.index("USER") < keywords.index("CMD")
    assert ("EXPOSE", "8000") in instructions


def test_dockerfile_copies_and_installs_files_that_exist() -> None:
    workdir = PurePosixPath("/")
    copied: set[PurePosixPath] = set()  # where files land in the image
    for keyword, arguments in _dockerfile_instructions():
        if keyword == "WORKDIR":
            workdir = workdir / arguments
        if keyword in {"COPY", "ADD"}:
            parts = [p for p in _exec_form(arguments) if not p.startswith("--")]
            sources, target = parts[:-1], workdir / parts[-1]
            into_folder = parts[-1].endswith("/") or len(sources) > 1
            for source in sources:
                assert (ROOT / source).exists(), f"{keyword} {source}: no such file"
                if source == ".":
                    copied.add(target)
                    continue
                assert not _dockerignored(source), (
                    f"{keyword} {source}: excluded by .dockerignore"
                )
                copied.add(
                    target / PurePosixPath(source).name if into_folder else target
                )
        if keyword == "RUN" and "pip install" in arguments:
            assert "--no-cache-dir" in arguments
            for requirement in re.findall(r"-r\s+(\S+)", arguments):
                installed = workdir / requirement
                assert any(
                    installed == place or place in installed.parents for place in copied
                ), f"{requirement} is installed before it is copied into the image"
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert re.search(r"^gunicorn\b", requirements, re.MULTILINE), (
        "the image runs gunicorn: requirements.txt must install it"
    )
    for needed in ("manage.py", "kcproject", "fulfillment", "admin_ui"):
        assert (ROOT / needed).exists(), needed
        assert not _dockerignored(needed), f".dockerignore leaves out {needed}"
    for private in (".env", ".venv", ".data", ".git"):
        assert _dockerignored(private), f".dockerignore must leave out {private}"


# --- (4) variables -----------------------------------------------------------------


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _ENV_ASSIGNMENT.match(line)
        if match:
            values[match.group(1)] = match.group(2).strip()
    return values


def test_known_variables_are_read_by_the_settings() -> None:
    sources = "\n".join(
        path.read_text(encoding="utf-8") for path in (ROOT / "kcproject").glob("*.py")
    )
    unread = sorted(
        name
        for name in SETTINGS_VARIABLES
        if f'"{name}"' not in sources and f"'{name}'" not in sources
    )
    assert not unread, f"kcproject's settings no longer read {unread}"


def test_compose_sets_and_interpolates_only_known_variables(
    services: dict[str, Any],
) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8").replace("$$", "")
    interpolated = {
        match.group("braced") or match.group("bare")
        for match in _INTERPOLATION.finditer(text)
    }
    unknown = sorted(interpolated - SETTINGS_VARIABLES - COMPOSE_VARIABLES)
    assert not unknown, f"docker-compose.yml interpolates unknown variables {unknown}"
    for name in APP_SERVICES:
        environment = services[name].get("environment", {})
        keys = (
            {item.split("=", 1)[0] for item in environment}
            if isinstance(environment, list)
            else set(environment)
        )
        assert keys <= SETTINGS_VARIABLES, (
            f"{name} sets variables the settings do not read: "
            f"{sorted(keys - SETTINGS_VARIABLES)}"
        )


def test_env_example_documents_every_variable_and_only_known_ones() -> None:
    names = set(_env_example())
    known = SETTINGS_VARIABLES | COMPOSE_VARIABLES
    assert not names - known, (
        f".env.example sets unknown variables {sorted(names - known)}"
    )
    missing = (CONTRACT_VARIABLES | COMPOSE_VARIABLES | {"LOG_FORMAT"}) - names
    assert not missing, f".env.example does not document {sorted(missing)}"


def test_env_example_holds_no_secrets_so_a_copy_cannot_start_compose() -> None:
    """Compose refuses empty secrets, so `cp .env.example .env` alone fails with
    compose's message instead of running with values everyone can read."""
    values = _env_example()
    for name in COMPOSE_SECRETS:
        assert values.get(name) == "", f".env.example must leave {name} empty"
    assert not re.search(
        r"sk_(live|test)_|rk_live_|whsec_[A-Za-z0-9]", ENV_EXAMPLE.read_text()
    )


@pytest.mark.parametrize(
    ("service", "argv", "host", "pooled"),
    [
        ("web", ["gunicorn"], "pgbouncer", True),
        ("web", ["manage.py", "migrate"], "db", False),
        ("worker", ["manage.py", "procrastinate", "worker"], "db", False),
        ("migrate", ["manage.py", "migrate"], "db", False),
    ],
)
def test_settings_accept_env_example_with_the_compose_database(
    services: dict[str, Any], service: str, argv: list[str], host: str, pooled: bool
) -> None:
    """Load the settings in a fresh interpreter from .env.example plus compose's
    environment, as a container would: every value parses, and the database is the
    `db` service with its credentials (the web app's through `pgbouncer`)."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    env.update({k: v for k, v in _env_example().items() if v})
    secrets_given = {name: f"test-{name.lower()}" for name in COMPOSE_SECRETS}
    environment = _interpolated(services[service]["environment"], secrets_given)
    env.update({k: str(v) for k, v in environment.items()})
    env["DJANGO_SETTINGS_MODULE"] = "kcproject.settings"
    script = (
        f"import sys; sys.argv = {argv!r}\n"
        "import json, django; from django.conf import settings; django.setup(); "
        "db = settings.DATABASES['default']; "
        "print(json.dumps({k: db.get(k) for k in ('HOST', 'PORT', 'NAME', 'USER', "
        "'PASSWORD', 'DISABLE_SERVER_SIDE_CURSORS')} | "
        "{'TIME_ZONE': settings.TIME_ZONE, 'options': 'options' in db['OPTIONS']}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    postgres = services["db"]["environment"]
    assert loaded["HOST"] == host
    assert int(loaded["PORT"] or 5432) == 5432
    assert loaded["NAME"] == postgres["POSTGRES_DB"]
    assert loaded["USER"] == postgres["POSTGRES_USER"]
    assert loaded["PASSWORD"] == _interpolated(
        postgres["POSTGRES_PASSWORD"], secrets_given
    )
    assert loaded["PASSWORD"] == secrets_given["POSTGRES_PASSWORD"]
    assert loaded["TIME_ZONE"] == _env_example()["TIME_ZONE"]
    # Through the pooler: no server-side cursors, no startup options.
    assert loaded["DISABLE_SERVER_SIDE_CURSORS"] is pooled
    assert loaded["options"] is not pooled


# --- (5) no start without real secrets, never with DEBUG on -------------------------


class InterpolationError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name
        self.message = message


_SUBSTITUTION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?+])(?P<word>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _interpolate(text: str, env: dict[str, str]) -> str:
    """A string as compose interpolates it (Compose Specification, "Interpolation"):
    ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+replacement}``. Defaults are
    taken literally (compose nests; this file does not)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("bare")
        operator, word = match.group("operator"), match.group("word") or ""
        value = env.get(name)
        unset_or_empty = not value
        missing = (
            unset_or_empty if operator and operator.startswith(":") else (value is None)
        )
        if operator in {":?", "?"} and missing:
            raise InterpolationError(name, word)
        if operator in {":-", "-"} and missing:
            return word
        if operator in {":+", "+"}:
            return word if not missing else ""
        return value or ""

    return _SUBSTITUTION.sub(substitute, text)


def _interpolated(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return _interpolate(node, env)
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    return node


def test_the_interpolation_reads_strings_as_compose_does() -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert _interpolate("a $SET ${SET} $$SET", env) == "a value value $SET"
    assert _interpolate("${EMPTY:-fallback} ${EMPTY-fallback}", env) == "fallback "
    assert _interpolate("${UNSET-fallback} ${SET:+alt}", env) == "fallback alt"
    assert _interpolate("${EMPTY?allowed}", env) == ""
    with pytest.raises(InterpolationError, match="EMPTY is missing a value: say"):
        _interpolate("${EMPTY:?say}", env)
    with pytest.raises(InterpolationError, match="UNSET"):
        _interpolate("${UNSET?say}", env)


def _runs_the_app(service: dict[str, Any]) -> bool:
    """Whether the service runs this project's code (manage.py or gunicorn), by
    its own build of this Dockerfile or by the command it runs."""
    argv = _effective_command(service) if "build" in service else None
    command = _argv(service["command"]) if "command" in service else argv or []
    return bool(command) and (
        command[:2] == ["python", "manage.py"] or command[0] == "gunicorn"
    )


def test_every_service_that_runs_the_app_has_debug_off_and_required_secrets(
    services: dict[str, Any],
) -> None:
    runs_app = [name for name, service in services.items() if _runs_the_app(service)]
    assert set(runs_app) == set(APP_SERVICES), runs_app
    for name in runs_app:
        environment = services[name]["environment"]
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        # Set in `environment:`, which wins over .env (env_file).
        assert str(environment.get("DJANGO_DEBUG")) == "0", (
            f"{name} must run with DJANGO_DEBUG=0"
        )
        for secret in COMPOSE_SECRETS[:3]:
            value = str(environment.get(secret, ""))
            assert re.fullmatch(rf"\$\{{{secret}:\?[^}}]*{secret}[^}}]*\}}", value), (
                f"{name}: {secret} must be ${{{secret}:?message naming it}}, "
                f"not {value!r}"
            )
        assert "${POSTGRES_PASSWORD:?" in environment["DATABASE_URL"]
    password = services["db"]["environment"]["POSTGRES_PASSWORD"]
    assert re.fullmatch(
        r"\$\{POSTGRES_PASSWORD:\?[^}]*POSTGRES_PASSWORD[^}]*\}", password
    )


def _docker_compose() -> list[str] | None:
    """`docker compose` (or `docker-compose`) when one that works is installed."""
    for command in (["docker", "compose"], ["docker-compose"]):
        try:
            done = subprocess.run(
                [*command, "version"], capture_output=True, timeout=20, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return command
    return None


@pytest.mark.parametrize("missing", COMPOSE_SECRETS)
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_compose_refuses_to_start_without_each_secret_and_names_it(
    compose: dict[str, Any], tmp_path: Path, missing: str, value: str | None
) -> None:
    env = {name: f"real-{name.lower()}" for name in COMPOSE_SECRETS}
    if value is None:
        del env[missing]
    else:
        env[missing] = value

    with pytest.raises(InterpolationError) as refused:
        _interpolated(compose, env)
    assert refused.value.name == missing
    assert missing in refused.value.message, "the message must name the variable"

    docker_compose = _docker_compose()
    if docker_compose is not None:
        (tmp_path / "given.env").write_text(
            "".join(f"{name}={secret}\n" for name, secret in env.items())
        )
        inherited = {k: v for k, v in os.environ.items() if k not in COMPOSE_SECRETS}
        done = subprocess.run(
            [
                *docker_compose,
                "-f",
                str(COMPOSE_FILE),
                "--env-file",
                str(tmp_path / "given.env"),
                "config",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            env=inherited,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0 and missing in done.stderr, done.stderr


def test_compose_with_every_secret_given_is_still_a_valid_compose_file(
    schema: dict[str, Any], compose: dict[str, Any]
) -> None:
    env = {name: f"real-{name.lower()}" for name in COMPOSE_SECRETS}
    interpolated = _interpolated(compose, env)
    assert not _schema_errors(schema, interpolated)
    web = interpolated["services"]["web"]["environment"]
    assert web["DJANGO_SECRET_KEY"] == env["DJANGO_SECRET_KEY"]
    assert web["DATABASE_URL"] == (
        "postgres://fulfilment:real-postgres_password@pgbouncer:5432/fulfilment"
    )
    worker = interpolated["services"]["worker"]["environment"]
    assert worker["DATABASE_URL"] == (
        "postgres://fulfilment:real-postgres_password@db:5432/fulfilment"
    )
