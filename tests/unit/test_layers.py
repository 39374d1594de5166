"""The arrows of docs/architecture.md, held: every module is parsed (imports
inside functions included) and an import that points the wrong way fails.

    web, admin_ui, management → services, selectors, domain (ops for web)
    tasks → services, queue;  services → selectors, models, domain, queue
    selectors → models, domain;  models → domain;  domain → the stdlib only

``exceptions`` and ``queue.names`` (constants) are leaves anyone may use. No
function-local import of project code anywhere: a lazy import is how a cycle
hides.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from procrastinate.contrib.django import app

from fulfillment.queue import names

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("fulfillment", "admin_ui", "kcproject", "tools", "tests")
LEAVES = ("fulfillment.exceptions", "fulfillment.queue.names")

# Layer (longest prefix wins) -> the project modules it may import, besides
# itself and the leaves. Third-party imports are free except in domain.
ALLOWED: dict[str, tuple[str, ...]] = {
    "fulfillment.domain": (),
    "fulfillment.models": ("fulfillment.domain",),
    "fulfillment.selectors": ("fulfillment.models", "fulfillment.domain"),
    "fulfillment.services": (
        "fulfillment.selectors",
        "fulfillment.models",
        "fulfillment.domain",
        "fulfillment.queue",
    ),
    "fulfillment.queue": ("fulfillment.models",),
    "fulfillment.tasks": ("fulfillment.services", "fulfillment.queue"),
    "fulfillment.ops": (
        "fulfillment.selectors",
        "fulfillment.models",
        "fulfillment.domain",
    ),
    "fulfillment.web": (
        "fulfillment.services",
        "fulfillment.selectors",
        "fulfillment.domain",
        "fulfillment.ops",
    ),
    "fulfillment.management": (
        "fulfillment.services",
        "fulfillment.selectors",
        "fulfillment.domain",
        "fulfillment.ops",
        "fulfillment.web.serializers",
        "fulfillment.testing",
        "fulfillment.models",
    ),
    "fulfillment.testing": ("fulfillment.domain",),
    "fulfillment.apps": (),
    "fulfillment.exceptions": (),
    "fulfillment": (),  # the package's __init__
    "admin_ui": (
        "fulfillment.services",
        "fulfillment.selectors",
        "fulfillment.domain",
        "fulfillment.models",
    ),
    "kcproject": (),
    "tools": ("fulfillment.testing", "fulfillment.queue"),
}
UNCHECKED = ("fulfillment.migrations", "admin_ui.migrations", "tests")


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    local: bool  # inside a function


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> Iterator[Path]:
    for package in PROJECT:
        yield from sorted((ROOT / package).rglob("*.py"))


def imports_of(path: Path) -> Iterator[Import]:
    importer = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    yield from _walk(tree, importer, is_package, local=False)


def _walk(
    node: ast.AST, importer: str, is_package: bool, *, local: bool
) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        inner = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield Import(importer, alias.name, child.lineno, local)
        elif isinstance(child, ast.ImportFrom):
            base = _absolute(child, importer, is_package)
            for alias in child.names:
                # ``from pkg import module`` imports pkg.module when it is one.
                yield Import(importer, f"{base}.{alias.name}", child.lineno, local)
        yield from _walk(child, importer, is_package, local=inner)


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = importer.split(".")
    package = package if is_package else package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(module: str) -> str | None:
    # "fulfillment" is the package's __init__ alone, not a prefix of every module.
    matches = [
        layer
        for layer in ALLOWED
        if within(module, layer) and (layer != "fulfillment" or module == layer)
    ]
    return max(matches, key=len) if matches else None


def is_project(target: str) -> bool:
    return any(within(target, package) for package in PROJECT)


def violation(found: Import) -> str | None:
    """Why this import breaks an arrow, or None."""
    if found.local and is_project(found.target):
        return "a function-local import of project code"
    if any(within(found.importer, skipped) for skipped in UNCHECKED):
        return None
    layer = layer_of(found.importer)
    assert layer is not None, f"{found.importer} is in no layer of ALLOWED"
    if layer == "fulfillment.domain" and not is_project(found.target):
        top = found.target.split(".")[0]
        if top not in sys.stdlib_module_names and top != "__future__":
            return "domain/ uses the standard library only"
        return None
    if not is_project(found.target):
        return None
    if within(found.target, layer) or any(
        within(found.target, leaf) for leaf in LEAVES
    ):
        return None
    # ``from fulfillment import queue`` names the package: allowed where queue is.
    allowed = ALLOWED[layer]
    if any(within(found.target, target) for target in allowed):
        return None
    if found.target in ("fulfillment", "fulfillment.queue") and any(
        within(target, found.target) for target in allowed
    ):
        return None
    return f"{layer} may import only {', '.join(allowed) or 'itself'}"


def violations(paths: list[Path]) -> list[str]:
    return [
        f"{found.importer}:{found.line} imports {found.target}: {why}"
        for path in paths
        for found in imports_of(path)
        if (why := violation(found))
    ]


def test_every_import_points_the_way_the_arrows_do() -> None:
    assert violations(list(project_files())) == []


def test_every_module_belongs_to_a_layer() -> None:
    homeless = [
        module_name(path)
        for path in project_files()
        if layer_of(module_name(path)) is None
        and not any(within(module_name(path), skip) for skip in UNCHECKED)
    ]
    assert homeless == []


@pytest.mark.parametrize(
    ("module", "source", "complaint"),
    [
        (
            "fulfillment/selectors/reversed.py",
            "from fulfillment.services import allocation\n",
            "fulfillment.selectors may import only",
        ),
        (
            "fulfillment/services/reversed.py",
            "from fulfillment import tasks\n",
            "fulfillment.services may import only",
        ),
        (
            "fulfillment/domain/reversed.py",
            "from django.utils import timezone\n",
            "standard library only",
        ),
        (
            "fulfillment/models.py",
            "from fulfillment.selectors import trace\n",
            "fulfillment.models may import only",
        ),
        (
            "admin_ui/reversed.py",
            "from fulfillment.tasks import allocate_trainer\n",
            "admin_ui may import only",
        ),
        (
            "fulfillment/services/lazy.py",
            "def f():\n    from fulfillment.models import Purchase\n",
            "function-local import",
        ),
        (
            "tests/lazy.py",
            "def f():\n    from tests import helpers\n",
            "function-local import",
        ),
    ],
)
def test_an_import_against_the_arrows_is_caught(
    tmp_path: Path,
    module: str,
    source: str,
    complaint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    path = tmp_path / module
    path.parent.mkdir(parents=True)
    path.write_text(source)

    found = violations([path])

    assert len(found) == 1 and complaint in found[0]


def test_the_relative_imports_resolve_like_python() -> None:
    node = ast.parse("from ..models import Purchase").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _absolute(node, "fulfillment.services.purchases", False) == (
        "fulfillment.models"
    )


def test_every_task_name_constant_names_a_registered_task() -> None:
    constants = {
        value
        for key, value in vars(names).items()
        if key.isupper() and isinstance(value, str) and value.startswith("fulfillment.")
    }
    registered = {name for name in app.tasks if name.startswith("fulfillment.")}
    assert constants == registered
