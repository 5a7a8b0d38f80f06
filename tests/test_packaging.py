from __future__ import annotations

import ast
import tomllib

from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_top_level_module_is_installed():
    modules = {path.stem for path in ROOT.glob("*.py")}
    assert modules == set(PYPROJECT["tool"]["setuptools"]["py-modules"])


def test_console_script_points_at_main():
    assert PYPROJECT["project"]["scripts"]["log_analyser"] == "log_analyser:main"


def test_nothing_imports_the_cli():
    for path in ROOT.glob("*.py"):
        if path.stem == "log_analyser":
            continue
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert "log_analyser" not in imported, path.name


def test_requirements_pin_every_runtime_dependency():
    pinned = {line.split("==")[0].lower() for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    declared = {dep.split(">")[0].split("=")[0].split("[")[0].strip().lower()
                for dep in PYPROJECT["project"]["dependencies"]}
    assert declared == pinned


def test_behaviour_rules_are_installed_with_the_package():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert "behaviours" in setuptools["packages"]
    patterns = setuptools["package-data"]["behaviours"]
    files = [p for p in (ROOT / "behaviours").iterdir() if p.suffix != ".py" and p.name != "__pycache__"]
    assert files and all(any(p.match(pattern) for pattern in patterns) for p in files)
