"""The layers point one way: the import contracts in pyproject.toml hold, and no module is in a cycle.

A new upward import (an actor importing the SDK, a domain package importing an actor) or a new cycle
fails here with import-linter's report, so it fails CI rather than surfacing as a circular import.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import grimp

from tests.support import BIN_DIR, REPO_ROOT, clean_env

ROOT_PACKAGES = ("factory", "actors", "deployments")
LONGEST_MODULE_LINES = 600


def lint_imports(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the contracts of `cwd`'s pyproject.toml (no cache left in the tree)."""
    found = BIN_DIR / "lint-imports"
    command = str(found) if found.exists() else shutil.which("lint-imports") or "lint-imports"
    return subprocess.run([command, "--config", "pyproject.toml", "--no-cache"], cwd=cwd,
                          env=clean_env(**env), capture_output=True, text=True, timeout=300)


def layer_contract() -> dict:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert tuple(config["root_packages"]) == ROOT_PACKAGES
    return next(contract for contract in config["contracts"] if contract["type"] == "layers")


def module_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every group of modules that import each other in a circle (strongly connected, size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm; the graph is a few hundred modules
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_the_import_contracts_hold() -> None:
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, f"import-linter found imports that break a contract:\n{result.stdout}" \
        f"{result.stderr}"


def test_no_module_imports_itself_in_a_circle() -> None:
    # Imports inside functions count too: a lazy import hides a cycle from Python, not from a reader.
    cycles = module_cycles(grimp.build_graph(*ROOT_PACKAGES, cache_dir=None))
    assert cycles == [], "modules that import each other in a circle:\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles)


def test_every_top_level_module_is_in_a_layer() -> None:
    layered = {name for layer in layer_contract()["layers"] for name in re.split(r"[|:]", layer)}
    layered = {name.strip() for name in layered}
    graph = grimp.build_graph(*ROOT_PACKAGES, cache_dir=None)
    unplaced = sorted(child for child in graph.find_children("factory") if child not in layered)
    assert unplaced == [], f"add these to a layer of the contract in pyproject.toml: {unplaced}"
    assert {"actors", "deployments"} <= layered


def test_no_source_module_is_over_600_lines() -> None:
    long = {str(path.relative_to(REPO_ROOT)): lines
            for package in ROOT_PACKAGES for path in sorted((REPO_ROOT / package).rglob("*.py"))
            if (lines := len(path.read_text().splitlines())) > LONGEST_MODULE_LINES}
    assert long == {}, f"split these modules (over {LONGEST_MODULE_LINES} lines): {long}"


def test_a_contract_breach_is_reported(tmp_path: Path) -> None:
    """The check can fail: an actor that imports the SDK (the old cycle) breaks the layers contract."""
    for package in ROOT_PACKAGES:
        shutil.copytree(REPO_ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    scheduler = tmp_path / "actors" / "scheduler.py"
    scheduler.write_text(scheduler.read_text() + "\n\ndef _lazy() -> None:\n    import factory.client\n")
    result = lint_imports(tmp_path, PYTHONPATH=str(tmp_path))
    assert result.returncode != 0
    assert "actors.scheduler -> factory.client" in result.stdout


def test_a_cycle_is_found() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=importer, imported=imported)
    assert module_cycles(graph) == [["p.a", "p.b", "p.c"]]
