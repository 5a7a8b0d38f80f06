"""The README's examples run as written.

Every ```sh block is run line by line with bash, in a scratch directory holding the bundled sample
log as access.log (also gzipped, and as logs/access.log*), unless the line before the block says
``<!-- readme-test: skip (REASON) -->`` with a reason from SKIP_REASONS (installs, Docker or network).
``log_analyser`` in those lines is this checkout run by this interpreter. The TOML and .env
examples are fed to the CLI as a config file and an env file.
"""
from __future__ import annotations

import gzip
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED

import log_analyser
from log_analyser_core.errors import ExitCode

README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"(?:<!-- readme-test: skip \((?P<reason>[^)]*)\) -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```",
                   re.DOTALL)
SKIP_REASONS = {"installs", "docker", "network", "runs until stopped"}
ALLOWED_EXIT = {ExitCode.OK, ExitCode.FINDINGS}  # --fail-on examples exit 10 on the sample log


def blocks(lang: str) -> list[tuple[str | None, str]]:
    return [(m["reason"], m["body"]) for m in BLOCK.finditer(README) if m["lang"] == lang]


def commands() -> list[str]:
    runnable = [body for reason, body in blocks("sh") if reason is None]
    return [line.strip() for body in runnable for line in body.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A directory with the sample log under the names the examples use, and a log_analyser shim."""
    here = tmp_path_factory.mktemp("readme")
    sample = (ROOT / "examples" / "access.log").read_bytes()
    (here / "access.log").write_bytes(sample)
    (here / "access.log.gz").write_bytes(gzip.compress(sample, mtime=0))
    (here / "known_good.log").write_bytes(sample)     # the trained-baseline examples
    (here / "today.log").write_bytes(sample)
    (here / "logs").mkdir()
    (here / "logs" / "access.log").write_bytes(sample[: len(sample) // 2])
    (here / "logs" / "access.log.1.gz").write_bytes(gzip.compress(sample[len(sample) // 2:], mtime=0))
    (here / "examples").symlink_to(ROOT / "examples")
    (here / "bench").symlink_to(ROOT / "bench")   # the dev-set generator in 'Detection quality'
    (here / "coreruleset").symlink_to(SHARED / "knowledge" / "coreruleset")   # the CRS examples' --crs DIR
    (here / "my-rules").mkdir()              # a folder of Sigma rules, as in the examples: two of SigmaHQ's
    for rule in sorted((SHARED / "sigmahq-webserver").rglob("*.yml"))[:2]:
        (here / "my-rules" / rule.name).write_bytes(rule.read_bytes())
    bin_dir = here / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "log_analyser"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m log_analyser \"$@\"\n")
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT), "NO_COLOR": "1",
           "XDG_CONFIG_HOME": str(here / "config"), "XDG_CACHE_HOME": str(here / "cache"),
           "XDG_DATA_HOME": str(here / "data"),   # no CRS the machine's user installed
           "ABUSEIPDB_BASE_URL": "http://127.0.0.1:9/api/v2",  # never the real service (and no key)
           "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    env.pop("ABUSEIPDB_API_KEY", None)
    env.pop("OPENAI_API_KEY", None)
    return here, env


def test_every_skipped_block_says_why():
    reasons = [reason for reason, _ in blocks("sh") if reason is not None]
    assert reasons and set(reasons) <= SKIP_REASONS, reasons


def test_the_readme_has_runnable_examples():
    assert len([c for c in commands() if "log_analyser" in c]) >= 6


@pytest.mark.parametrize("command", commands())
def test_readme_command_runs(scratch, command):
    here, env = scratch
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=here, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode in ALLOWED_EXIT, f"{command}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    words = shlex.split(command, comments=True)
    for flag, value in zip(words, words[1:], strict=False):
        if flag in ("-o", "--output") and value != "-":
            assert (here / value).stat().st_size > 0, f"{command}: {value} not written"
    analysis = len(words) > 1 and words[1] not in log_analyser.COMMANDS
    if analysis and "-f" in words and "-o" not in words and "--dry-run-llm" not in words:
        assert "91.145.72.37" in result.stdout  # the planted scanner tops the table


def test_readme_config_file_and_env_file_examples_are_valid(tmp_path, capsys, monkeypatch):
    (toml,) = [body for _, body in blocks("toml")]
    (dotenv,) = [body for _, body in blocks("dotenv")]
    (tmp_path / "config.toml").write_text(toml)
    (tmp_path / "example.env").write_text(dotenv)
    monkeypatch.chdir(tmp_path)
    sample = str(ROOT / "examples" / "access.log")
    for extra in (["--config", "config.toml"], ["--env-file", "example.env"]):
        code = log_analyser.main(["-f", sample, *extra])
        err = capsys.readouterr().err
        assert code in ALLOWED_EXIT and "error" not in err, err
    assert Path("report.json").stat().st_size > 0 and Path("report.csv").stat().st_size > 0


def test_env_example_file_documents_only_real_settings():
    from log_analyser_core.cli import config

    options = config.configurable_options(log_analyser.build_parser())
    names = re.findall(r"^# (LOG_ANALYSER_\w+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert names
    for name in names:
        key = name.removeprefix("LOG_ANALYSER_").lower()
        assert key in options or name == config.CONFIG_ENV, name



def test_every_option_is_in_the_readme_option_table():
    table = [line for line in README.splitlines() if line.startswith("| `-")]
    for action in log_analyser.build_parser()._actions:
        longs = [s for s in action.option_strings if s.startswith("--") and s != "--help"]
        for option in longs:
            assert any(f"`{option}" in row or f", {option}" in row for row in table), option


def section(title: str) -> str:
    """The README text under '## title', up to the next '## ' heading."""
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    quick = [m["body"].strip() for m in BLOCK.finditer(section("Quick start"))]
    assert len(quick) == 2 and all("\n" not in command for command in quick), quick
    assert "examples/access.log" in quick[0]
    assert quick[1] == "bash scripts/test"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert any(line.split(" || ")[0] == quick[1] for line in ci)   # .ci/run runs exactly it


def test_every_option_in_the_readme_tables_exists():
    known = {s for action in log_analyser.build_parser()._actions for s in action.option_strings}
    rows = [line for line in README.splitlines() if line.startswith("| `-")]
    assert rows
    for row in rows:
        first_cell = row.split(" | ")[0]
        for option in re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", first_cell):
            assert option in known, f"{option} (README table) is not an option of log_analyser"


@pytest.mark.parametrize("argv", [["train"], ["evaluate"], ["rules", "check"], ["rules", "list"], ["rules", "update"],
                                  ["cache"]])
def test_every_subcommand_option_is_in_the_readme(argv, capsys):
    assert log_analyser.main([*argv, "--help"]) == ExitCode.OK
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", capsys.readouterr().out)) - {"--help"}
    assert options
    for option in options:
        assert re.search(rf"{option}(?![a-z0-9-])", README), f"log_analyser {' '.join(argv)} {option}"


def test_documented_exit_codes_match_the_code():
    rows = re.findall(r"^\| (\d+) \|", section("Exit codes"), re.MULTILINE)
    assert sorted(int(code) for code in rows) == sorted(int(code) for code in ExitCode)
    in_help = re.findall(r"^  (\d+) ", log_analyser.EPILOG.split("exit codes:", 1)[1], re.MULTILINE)
    assert sorted(int(code) for code in in_help) == sorted(int(code) for code in ExitCode)


def test_every_top_level_module_is_in_the_layout():
    layout = section("Development").split("**Layout**", 1)[1]
    for module in sorted(path.name for path in ROOT.glob("*.py")):
        assert f"`{module}`" in layout, module


def test_readme_json_example_follows_the_schema():
    import json

    import jsonschema

    from log_analyser_core.results import SCHEMA_VERSION

    (body,) = [body for _, body in blocks("json")]
    example = json.loads(body)
    schema = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
    jsonschema.validate(example, schema)
    assert example["schema_version"] == SCHEMA_VERSION
    assert f"schema version `{SCHEMA_VERSION}`" in section("Output formats")
    # the schema allows extra keys, so check the names: a misspelt field would still validate
    assert set(example["summary"]) <= set(schema["properties"]["summary"]["properties"])
    finding = schema["$defs"]["finding"]["properties"]
    for item in example["findings"]:
        assert set(item) <= set(finding)
        for evidence in item["evidence"]:
            assert set(evidence) <= set(schema["$defs"]["evidence"]["properties"])


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    (code,) = [body for _, body in blocks("python")]
    (tmp_path / "access.log").write_bytes((ROOT / "examples" / "access.log").read_bytes())
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert "91.145.72.37" in capsys.readouterr().out
