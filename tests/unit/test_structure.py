"""The shape of the code: no import cycle (imports inside functions included), `shared/` knows
no service, and no production module or function outgrows what one reader can hold."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "command_service", "query_service", "projector")
TOP_LEVEL = ("cli.py", "composition.py")
SERVICES = ("command_service", "query_service", "projector", "cli", "composition")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def production_files() -> dict[str, Path]:
    """Module name → file, for every production module."""
    files = {name.removesuffix(".py"): ROOT / name for name in TOP_LEVEL}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            files[name] = path
    return files


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The project's modules `path` imports, anywhere in it (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in modules:
                    found.add(submodule)
                elif node.module in modules:
                    found.add(node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    files = production_files()
    modules = set(files)
    return {name: imported_modules(path, modules) - {name} for name, path in files.items()}


def test_no_production_module_takes_part_in_an_import_cycle() -> None:
    graph = import_graph()

    try:
        list(TopologicalSorter(graph).static_order())
        cycle: list[str] = []
    except CycleError as error:
        cycle = error.args[1]

    assert cycle == [], f"import cycle: {' -> '.join(cycle)}"


def test_shared_imports_no_service_module() -> None:
    graph = import_graph()

    reaching = {
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.startswith("shared")
        for target in targets
        if target.split(".")[0] in SERVICES
    }

    assert reaching == set()


def test_shared_reads_nothing_of_an_apps_state_but_its_settings() -> None:
    named: set[str] = set()
    for path in sorted((ROOT / "shared").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "state"
                and node.attr != "settings"
            ):
                named.add(f"{path.name}:{node.lineno} state.{node.attr}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and node.args
                and "state" in ast.unparse(node.args[0])
            ):
                named.add(f"{path.name}:{node.lineno} {ast.unparse(node)}")

    assert named == set()


def test_no_production_module_is_over_300_lines() -> None:
    long = {
        f"{path.relative_to(ROOT)}: {count}"
        for path in production_files().values()
        if (count := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }

    assert long == set()


def test_no_production_function_is_over_60_lines() -> None:
    long: set[str] = set()
    for path in production_files().values():
        long.update(
            f"{path.relative_to(ROOT)}:{function.lineno} {function.name}: {length}"
            for function in outermost_functions(ast.parse(path.read_text()))
            if (length := (function.end_lineno or function.lineno) - function.lineno + 1)
            > MAX_FUNCTION_LINES
        )

    assert long == set()


def outermost_functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level functions and methods; a nested function counts in its parent's lines."""
    found: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node)
        elif isinstance(node, ast.ClassDef):
            found.extend(outermost_functions(node))
    return found


def test_only_the_store_module_names_the_event_tables_columns() -> None:
    """The library's table is read through `shared/store.py`, whose rows carry the same names
    (`position`, `task_id`, `version`) everywhere: its own column names appear nowhere else."""
    store = ROOT / "shared" / "store.py"
    columns = ("notification_id", "FROM tasks_events", "originator_version AS")
    naming = {
        f"{path.relative_to(ROOT)}: {column}"
        for path in production_files().values()
        if path != store
        for column in columns
        if column in path.read_text()
    }

    assert naming == set()
    assert all(column in store.read_text() for column in ("notification_id", "originator_id"))
