"""Settings precedence: defaults < config file < environment (.env) < flags, through the real CLI."""
from __future__ import annotations

import json

import pytest
from conftest import DATA

import log_analyser
from log_analyser_core.cli import config
from log_analyser_core.errors import ConfigError, ExitCode
from log_analyser_core.results import Severity

SMALL = str(DATA / "small.log")  # top score 48.3: one client flagged at 40, none at 50, all at 0


def parse(*argv, environ=None, cwd=None):
    return config.parse_arguments(log_analyser.build_parser, ["-f", SMALL, *argv],
                                  environ={} if environ is None else environ, cwd=cwd)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def flagged(capsys, *argv) -> int:
    code = log_analyser.main(["-f", SMALL, "-o", "-", "--output-format", "json", *argv])
    out, err = capsys.readouterr()
    assert code == ExitCode.OK, err
    return json.loads(out)["summary"]["flagged"]


def test_defaults_when_nothing_is_configured(tmp_path):
    args = parse(cwd=tmp_path)
    assert (args.threshold, args.top, args.format_name, args.fail_on, args.output) == (40.0, 20, "auto", None, [])


def test_config_file_overrides_defaults(tmp_path):
    path = write(tmp_path / "c.toml", 'threshold = 60\ntop = 5\nformat = "combined"\nfail-on = "high"\n'
                                      'output = ["a.json", "b.csv"]\nverbose = true\n')
    args = parse("--config", str(path), cwd=tmp_path)
    assert (args.threshold, args.top, args.format_name, args.fail_on) == (60.0, 5, "combined", Severity.HIGH)
    assert args.output == ["a.json", "b.csv"] and args.verbose is True


def test_environment_overrides_config_and_flags_override_environment(tmp_path):
    path = write(tmp_path / "c.toml", "threshold = 60\ntop = 5\nseed = 3\n")
    environ = {"LOG_ANALYSER_THRESHOLD": "70", "LOG_ANALYSER_TOP": "7"}
    args = parse("--config", str(path), "--top", "9", environ=environ, cwd=tmp_path)
    assert (args.threshold, args.top, args.seed) == (70.0, 9, 3)


def test_a_flag_equal_to_its_default_still_wins(tmp_path):
    args = parse("--threshold", "40", environ={"LOG_ANALYSER_THRESHOLD": "70"}, cwd=tmp_path)
    assert args.threshold == 40.0


def test_output_flags_replace_configured_outputs(tmp_path):
    path = write(tmp_path / "c.toml", 'output = ["a.json"]\n')
    assert parse("--config", str(path), "-o", "x.csv", cwd=tmp_path).output == ["x.csv"]
    assert parse(environ={"LOG_ANALYSER_OUTPUT": "a.json 'b c.csv'"}, cwd=tmp_path).output == ["a.json", "b c.csv"]


def test_dotenv_in_working_directory_sets_options_and_exports_secrets(tmp_path):
    write(tmp_path / ".env", "LOG_ANALYSER_THRESHOLD=65\nABUSEIPDB_API_KEY=from-file\nOPENAI_API_KEY=from-file\n")
    environ = {"OPENAI_API_KEY": "from-environment"}
    args = parse(environ=environ, cwd=tmp_path)
    assert args.threshold == 65.0
    assert environ["ABUSEIPDB_API_KEY"] == "from-file"
    assert environ["OPENAI_API_KEY"] == "from-environment"  # the real environment beats .env


def test_env_file_flag_and_its_absence(tmp_path):
    env = write(tmp_path / "custom.env", "export LOG_ANALYSER_TOP=3  # comment\n")
    assert parse("--env-file", str(env), cwd=tmp_path).top == 3
    with pytest.raises(ConfigError, match="env file not found"):
        parse("--env-file", str(tmp_path / "missing.env"), cwd=tmp_path)


def test_default_config_path_follows_xdg_config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config.default_config_path() == tmp_path / "log_analyser" / "config.toml"
    assert parse(cwd=tmp_path).threshold == 40.0  # absent: ignored
    (tmp_path / "log_analyser").mkdir()
    write(tmp_path / "log_analyser" / "config.toml", "threshold = 55\n")
    assert parse(cwd=tmp_path).threshold == 55.0


def test_config_dev_null_ignores_the_user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "log_analyser").mkdir()
    write(tmp_path / "log_analyser" / "config.toml", "threshold = 55\n")
    assert parse("--config", "/dev/null", cwd=tmp_path).threshold == 40.0


def test_config_path_from_environment(tmp_path):
    path = write(tmp_path / "c.toml", "top = 4\n")
    assert parse(environ={"LOG_ANALYSER_CONFIG": str(path)}, cwd=tmp_path).top == 4
    with pytest.raises(ConfigError, match="config file not found"):
        parse(environ={"LOG_ANALYSER_CONFIG": str(tmp_path / "nope.toml")}, cwd=tmp_path)


@pytest.mark.parametrize(("text", "message"), [
    ("treshold = 60\n", "unknown setting 'treshold' (did you mean 'threshold'?)"),
    ("threshold = 'high'\n", "threshold: invalid value 'high'"),
    ("top = 2.5\n", "top: expected a whole number, not 2.5"),
    ("threshold = true\n", "threshold: expected a number, not True"),
    ("verbose = 'maybe'\n", "verbose: expected true or false"),
    ("output_format = 'xml'\n", "output_format: invalid choice 'xml' (choose from table, csv, json,"),
    ("fail_on = 'severe'\n", "fail_on: invalid value 'severe'"),
    ("threshold = [1]\n", "threshold: expected a single value"),
    ("files = ['x.log']\n", "unknown setting 'files'"),
    ("threshold = \n", "invalid TOML"),
])
def test_bad_config_files_are_one_line_errors_naming_the_file(tmp_path, capsys, text, message):
    path = write(tmp_path / "bad.toml", text)
    code = log_analyser.main(["-f", SMALL, "--config", str(path)])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    assert err.count("\n") == 1 and err.startswith("error: ") and str(path) in err and message in err, err


def test_bad_environment_value_names_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("LOG_ANALYSER_TOP", "many")
    assert log_analyser.main(["-f", SMALL]) == ExitCode.USAGE
    assert "error: LOG_ANALYSER_TOP: invalid value 'many'" in capsys.readouterr().err


def test_out_of_range_configured_value_is_validated_like_the_flag(tmp_path, capsys):
    path = write(tmp_path / "c.toml", "threshold = 150\n")
    assert log_analyser.main(["-f", SMALL, "--config", str(path)]) == ExitCode.USAGE
    assert "--threshold must be between 0 and 100, not 150" in capsys.readouterr().err


def test_precedence_end_to_end_changes_the_analysis(tmp_path, capsys, monkeypatch):
    path = write(tmp_path / "c.toml", "threshold = 0\n")
    assert flagged(capsys) == 1
    assert flagged(capsys, "--config", str(path)) == 7
    monkeypatch.setenv("LOG_ANALYSER_THRESHOLD", "50")    # beats the file: only the scanner, by its rule hits
    assert flagged(capsys, "--config", str(path)) == 1
    assert flagged(capsys, "--config", str(path), "--threshold", "0") == 7   # a flag beats both


def test_fail_on_from_environment_gates_ci(capsys, monkeypatch):
    monkeypatch.setenv("LOG_ANALYSER_FAIL_ON", "medium")
    assert log_analyser.main(["-f", SMALL]) == ExitCode.FINDINGS
    # the small log's scanner is critical, so no --fail-on level lets it pass; a stricter flag threshold does
    assert log_analyser.main(["-f", SMALL, "--fail-on", "critical"]) == ExitCode.FINDINGS
    assert log_analyser.main(["-f", SMALL, "--threshold", "95"]) == ExitCode.OK


def test_every_long_option_but_the_command_line_ones_is_configurable():
    options = config.configurable_options(log_analyser.build_parser())
    assert {"threshold", "fail_on", "output", "format", "log_format", "tz", "seed", "verbose"} <= set(options)
    assert not set(options) & {"help", "version", "file", "config", "env_file"}


def test_boolean_optional_and_count_options_from_the_environment(tmp_path):
    import argparse

    def factory():
        parser = argparse.ArgumentParser()
        parser.add_argument("--colour", action=argparse.BooleanOptionalAction, default=True)
        parser.add_argument("--loud", action="count", default=0)
        parser.add_argument("--quiet", action="store_false", dest="talk")
        return parser

    environ = {"LOG_ANALYSER_COLOUR": "no", "LOG_ANALYSER_LOUD": "2", "LOG_ANALYSER_QUIET": "true"}
    args = config.parse_arguments(factory, [], environ=environ, cwd=tmp_path)
    assert (args.colour, args.loud, args.talk) == (False, 2, False)
    args = config.parse_arguments(factory, ["--colour", "--loud"], environ=environ, cwd=tmp_path)
    assert (args.colour, args.loud) == (True, 1)
