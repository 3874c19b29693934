"""The package's layout (README, "Layout"): dependencies point one way, cli -> defs -> library;
the environment is read in one module, `enrichment_assets/settings.py`.

Read from the source with `ast` (every import, also those inside functions and under
TYPE_CHECKING): nothing is imported, so the test proves the layout, not what a run loads.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from enrichment_assets import settings

PACKAGE = Path(__file__).resolve().parents[1] / "enrichment_assets"
DAGSTER_PACKAGES = ("dagster", "dagster_postgres", "dagster_webserver", "dagster_dg_cli")


# Named in dagster.yaml, loaded by Dagster's instance (not a definition: a module under defs/
# is imported by every code location load, and this one brings SQLAlchemy and Alembic).
INSTANCE_PLUMBING = ("instance_storage.py",)


def layer_of(path: Path) -> str:
    """`cli`, `defs` (the Dagster definitions and definitions.py), `instance` (the storage
    class dagster.yaml names) or `library`."""
    top = path.relative_to(PACKAGE).parts[0]
    if top == "cli":
        return "cli"
    if top in INSTANCE_PLUMBING:
        return "instance"
    return "defs" if top in ("defs", "definitions.py") else "library"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = path.relative_to(PACKAGE.parent).with_suffix("").parts[: -node.level]
                module = ".".join([*base, module] if module else base)
            found.append((node.lineno, module))
    return found


def forbidden(layer: str, module: str) -> bool:
    top = module.split(".")[0]
    if layer == "library":
        return top in DAGSTER_PACKAGES or module.startswith(
            ("enrichment_assets.defs", "enrichment_assets.cli", "enrichment_assets.definitions")
        )
    if layer == "defs":
        return module.startswith("enrichment_assets.cli")
    if layer == "instance":
        return module.startswith(
            ("enrichment_assets.defs", "enrichment_assets.cli", "enrichment_assets.definitions")
        )
    return False


def test_dependencies_point_from_cli_to_defs_to_library() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    layers = {layer_of(path) for path in files}
    assert layers == {"cli", "defs", "instance", "library"}
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} ({layer_of(path)}) imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if forbidden(layer_of(path), module)
    ]
    assert wrong == []


def test_the_walk_finds_imports_inside_functions() -> None:
    """`enrich`'s commands import what they need when they run: those count too."""
    commands = PACKAGE / "cli" / "commands.py"
    tree = ast.parse(commands.read_text(encoding="utf-8"))
    top_level = {node.lineno for node in tree.body}
    nested = [line for line, _ in imported_modules(commands) if line not in top_level]
    assert nested
    assert forbidden("library", "dagster._core.storage")
    assert forbidden("library", "enrichment_assets.defs.resources")
    assert forbidden("defs", "enrichment_assets.cli.runner")
    assert not forbidden("cli", "enrichment_assets.defs.resources")


ENVIRONMENT_READ = re.compile(r"\bos\.environ\b|\bgetenv\b|\bfrom os import environ\b|\bputenv\b")
VARIABLE_NAME = re.compile(r"\b(?:ENRICH_[A-Z0-9_]*[A-Z0-9]|DAGSTER_HOME|DAGSTER_PG_URL)\b")


def test_the_environment_is_read_in_the_settings_module_only() -> None:
    settings_module = PACKAGE / "settings.py"
    outside = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != settings_module
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ENVIRONMENT_READ.search(line)
    ]
    assert outside == []
    assert ENVIRONMENT_READ.search(settings_module.read_text(encoding="utf-8"))


def test_every_variable_the_package_names_is_documented_in_settings() -> None:
    named = {
        name
        for path in PACKAGE.rglob("*.py")
        for name in VARIABLE_NAME.findall(path.read_text(encoding="utf-8"))
    }
    assert named - set(settings.VARIABLES) == set()
    with pytest.raises(KeyError, match="ENRICH_NOT_A_SETTING: not a documented setting"):
        settings.text("ENRICH_NOT_A_SETTING")


def test_no_private_dagster_import() -> None:
    private = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] in DAGSTER_PACKAGES
        and any(part.startswith("_") for part in module.split(".")[1:])
    ]
    assert private == []


MAX_FUNCTION_LINES = 60


def function_lengths(source: str, relative: str) -> dict[str, int]:
    """Lines of each function (methods and nested ones too), `def` to its last line,
    docstring included, decorators not; named `file:name` (`file:Class.name` for methods)."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                lengths[f"{relative}:{name}"] = child.end_lineno - child.lineno + 1  # type: ignore[operator]
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


def test_no_function_is_longer_than_60_lines() -> None:
    lengths = {
        name: lines
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, lines in function_lengths(
            path.read_text(encoding="utf-8"), path.relative_to(PACKAGE).as_posix()
        ).items()
    }
    too_long = {name: lines for name, lines in lengths.items() if lines > MAX_FUNCTION_LINES}
    assert too_long == {}


def test_function_lengths_count_from_def_to_the_last_line() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    source = (
        "@decorator\n"
        f'def long():\n    """Docstring."""\n{body}'
        "class Enricher:\n"
        "    async def method(self):\n"
        "        def inner():\n"
        "            pass\n" + body.replace("    ", "        ")
    )
    assert function_lengths(source, "m.py") == {
        "m.py:long": 62,
        "m.py:Enricher.method": 63,
        "m.py:Enricher.method.inner": 2,
    }
