"""The import contracts of pyproject's [tool.importlinter], over the whole code.

lint-imports (run by .ci/run) builds its graph with Grimp, which reads packages only: the five
top-level stage modules appear there as external names, with none of their own imports. Here the
same contracts, checked by import-linter's own contract classes, run over a graph that also holds
those modules and every import they make (function-level imports included), and every contract is
shown to fail on the import it forbids.
"""
from __future__ import annotations

import ast
import copy
import shutil
import subprocess
import tomllib

import grimp
import pytest
from conftest import ROOT
from importlinter.application.use_cases import _get_built_in_contract_types
from importlinter.configuration import configure

CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
SESSION = {key: value for key, value in CONFIG.items() if key != "contracts"}
STAGES = ("log_analyser", "file_parser", "anomaly_detector", "enrichment", "reporting")
OURS = (*STAGES, "log_analyser_core")


def imported_names(path) -> list[tuple[str, int]]:
    """(dotted name, line) of every absolute import in a module, at any depth."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return names


def build_graph() -> grimp.ImportGraph:
    """The package's graph (as lint-imports builds it) with the top-level modules as real modules."""
    package = grimp.build_graph(*CONFIG["root_packages"], include_external_packages=True, cache_dir=None)
    graph = grimp.ImportGraph()
    for module in package.modules:   # a stage module the package imports is external there: make it ours
        graph.add_module(module, is_squashed=package.is_module_squashed(module) and module not in STAGES)
    for module in package.modules:
        for imported in package.find_modules_directly_imported_by(module):
            for detail in package.get_import_details(importer=module, imported=imported):
                graph.add_import(importer=module, imported=imported, line_number=detail["line_number"],
                                 line_contents=detail["line_contents"])
    for stage in STAGES:
        if stage not in graph.modules:
            graph.add_module(stage)
    for stage in STAGES:
        for name, line in imported_names(ROOT / f"{stage}.py"):
            target = _deepest_known(graph, name)
            if target != stage:
                graph.add_import(importer=stage, imported=target, line_number=line, line_contents=f"import {name}")
    return graph


def _deepest_known(graph: grimp.ImportGraph, name: str) -> str:
    """The module ``name`` refers to: itself, the module holding the imported attribute, or the
    squashed top-level name of an external package."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in graph.modules:
            return ".".join(parts[:end])
    graph.add_module(parts[0], is_squashed=True)
    return parts[0]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    configure()
    return build_graph()


def contract(options: dict):
    classes = dict(_get_built_in_contract_types())
    return classes[options["type"]](name=options["name"], session_options=SESSION, contract_options=options)


def broken(graph: grimp.ImportGraph, contract_id: str) -> bool:
    (options,) = [c for c in CONFIG["contracts"] if c["id"] == contract_id]
    return not contract(options).check(copy.deepcopy(graph), verbose=False).kept


@pytest.mark.parametrize("options", CONFIG["contracts"], ids=lambda c: c["id"])
def test_contract_holds_over_the_top_level_modules_too(graph, options):
    check = contract(options).check(copy.deepcopy(graph), verbose=False)
    assert check.kept, check.metadata


def test_the_graph_holds_the_stage_modules_imports(graph):
    imported = graph.find_modules_directly_imported_by("reporting")
    assert "log_analyser_core.results" in imported and "log_analyser_core.report.exports" in imported
    assert "log_analyser_core.cli.analyse" in graph.find_modules_directly_imported_by("log_analyser")


def test_no_import_cycles_anywhere(graph):
    """No module reaches itself again through its imports: the package and the top-level modules."""
    ours = [m for m in graph.modules if m.split(".")[0] in OURS]
    for module in ours:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.split(".")[0] in OURS and imported != module:
                back = graph.find_shortest_chain(importer=imported, imported=module)
                assert back is None, f"cycle: {module} -> {' -> '.join(back or ())}"


@pytest.mark.parametrize(("importer", "imported", "contract_id"), [
    ("reporting", "file_parser", "writers"),                                  # a writer parsing
    ("log_analyser_core.report.html", "log_analyser_core.rules.sigma_engine", "writers"),
    ("log_analyser_core.report.model", "sklearn", "writers"),
    ("anomaly_detector", "log_analyser", "cli"),                               # a stage importing the CLI
    ("log_analyser_core.results", "log_analyser_core.pipeline", "layers"),    # the vocabulary, upwards
    ("file_parser", "log_analyser_core.pipeline", "layers"),
    ("log_analyser_core.parsing.presets", "log_analyser_core.parsing.formats", "acyclic"),   # formats imports presets
    ("log_analyser_core.results", "log_analyser_core.report.model", "acyclic"),   # model imports results,
])
def test_each_contract_catches_what_it_forbids(graph, importer, imported, contract_id):
    assert not broken(graph, contract_id)
    changed = copy.deepcopy(graph)
    if imported not in changed.modules:
        changed.add_module(imported, is_squashed=True)
    changed.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    assert broken(changed, contract_id)


def test_lint_imports_passes_on_the_checkout():
    """What .ci/run runs: the contracts as lint-imports itself reads them (from the checkout)."""
    command = shutil.which("lint-imports")
    assert command, "lint-imports is missing: pip install -e '.[test]'"
    done = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(CONFIG['contracts'])} kept, 0 broken." in done.stdout


def test_each_subcommand_is_one_module_of_the_cli_package():
    import log_analyser
    from log_analyser_core.cli import analyse

    assert {name: runner.__module__ for name, runner in log_analyser.COMMANDS.items()} == {
        name: f"log_analyser_core.cli.{name}" for name in ("rules", "cache", "train", "evaluate")}
    assert callable(analyse.run)   # the default command
