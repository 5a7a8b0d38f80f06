"""What an install holds: the five stage modules and one package, rule packs as package data, and a
wheel that works outside the checkout (also beside modules named like generic ones)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
import zipfile

import pytest
from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE = ROOT / "log_analyser_core"
STAGES = {"log_analyser", "file_parser", "anomaly_detector", "enrichment", "reporting"}


def test_the_top_level_holds_the_five_stages_and_they_are_installed():
    assert {path.stem for path in ROOT.glob("*.py")} == STAGES == set(SETUPTOOLS["py-modules"])


def test_every_package_folder_is_installed():
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert folders == set(SETUPTOOLS["packages"])


def test_console_script_points_at_main():
    assert PYPROJECT["project"]["scripts"]["log_analyser"] == "log_analyser:main"


def imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_nothing_imports_the_cli():
    for path in [*ROOT.glob("*.py"), *PACKAGE.rglob("*.py")]:
        if path.stem != "log_analyser" and "cli" not in path.relative_to(ROOT).parts:
            imported = imported_modules(path)
            assert "log_analyser" not in imported, path
            assert not any(m.startswith("log_analyser_core.cli") for m in imported), path


def test_requirements_pin_every_runtime_dependency():
    pinned = {line.split("==")[0].lower() for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    declared = {dep.split(">")[0].split("=")[0].split("[")[0].strip().lower()
                for dep in PYPROJECT["project"]["dependencies"]}
    assert declared == pinned


@pytest.mark.parametrize(("folder", "pattern"), [("behaviours", "*.yaml"), ("sigma_pack", "*.yml")])
def test_rule_packs_are_package_data(folder, pattern):
    data = SETUPTOOLS["package-data"]["log_analyser_core.rules"]
    assert f"{folder}/{pattern}" in data
    files = [p for p in (PACKAGE / "rules" / folder).iterdir() if p.name != "__pycache__"]
    assert files and all(p.match(pattern) for p in files)


def test_the_sigma_pack_in_the_package_is_the_top_level_sigma_folder():
    assert (PACKAGE / "rules" / "sigma_pack").resolve() == (ROOT / "sigma").resolve()


# --- the wheel, installed outside the checkout ---------------------------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    return next(out.glob("log_analyser-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """The wheel installed with ``pip --target`` (its dependencies come from this environment)."""
    target = tmp_path_factory.mktemp("target")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return target


def test_the_wheel_adds_six_specific_top_level_names(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = {name.split("/")[0].removesuffix(".py") for name in archive.namelist()
                 if not name.split("/")[0].endswith(".dist-info")}
        assert names == STAGES | {"log_analyser_core"}
        listed = archive.namelist()
    assert sum(n.startswith("log_analyser_core/rules/sigma_pack/") and n.endswith(".yml") for n in listed) == len(
        list((ROOT / "sigma").glob("*.yml")))
    assert sum(n.startswith("log_analyser_core/rules/behaviours/") for n in listed) == len(
        list((PACKAGE / "rules" / "behaviours").glob("*.yaml")))


def run_installed(target, cwd, *argv, extra_path=()):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, extra_path), str(target)])}
    code = ("import sys, log_analyser, log_analyser_core; "
            f"assert log_analyser_core.__file__.startswith({str(target)!r}), log_analyser_core.__file__; "
            "sys.exit(log_analyser.main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_installed_wheel_finds_every_built_in_rule(installed, tmp_path):
    result = run_installed(installed, tmp_path, "rules", "list")
    assert result.returncode == 0, result.stderr
    shipped = len(list((ROOT / "sigma").glob("*.yml")))
    assert f"{shipped} rules from 1 folders" in result.stdout + result.stderr


def test_the_installed_wheel_reports_sigma_hits_beside_generic_module_names(installed, tmp_path):
    """A `config` and an `analysis` module on the path first (a real PyPI package and a user's own
    file once shadowed ours) change nothing."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "config.py").write_text("raise ImportError('the wrong config')\n")
    (shadow / "analysis.py").write_text("raise ImportError('the wrong analysis')\n")
    (shadow / "evidence.py").write_text("raise ImportError('the wrong evidence')\n")
    log = ROOT / "examples" / "access.log"
    result = run_installed(installed, shadow, "-f", str(log), "-o", "-", "--output-format", "json",
                           extra_path=[shadow])
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(result.stdout)
    kinds = {e["kind"] for f in report["findings"] for e in f.get("evidence", [])}
    assert "sigma" in kinds, kinds
