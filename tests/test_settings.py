"""Settings checks its own values (the library refuses what no run can use); the CLI names the flags."""
from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import numpy as np
import pytest
from conftest import ROOT

import log_analyser
from log_analyser_core.errors import ConfigError, ExitCode, SettingError
from log_analyser_core.pipeline import Settings

SMALL = str(ROOT / "tests" / "data" / "small.log")
MARCH_10 = datetime(2026, 3, 10, tzinfo=UTC)
PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(("fields", "message"), [
    ({"threshold": -5}, "threshold must be between 0 and 100, not -5"),
    ({"threshold": 100.5}, "threshold must be between 0 and 100"),
    ({"threshold": float("nan")}, "threshold must be between 0 and 100, not nan"),
    ({"contamination": 3.0}, r"contamination must be in \(0, 0.5\], not 3.0"),
    ({"contamination": 0.0}, "contamination must be in"),
    ({"n_estimators": 0}, "n_estimators must be a whole number of at least 1, not 0"),
    ({"n_estimators": 2.5}, "n_estimators must be a whole number"),
    ({"random_state": -1}, "random_state must be a whole number of at least 0"),
    ({"reasons": -1}, "reasons must be a whole number of at least 0"),
    ({"max_unparsed_ratio": 1.5}, "max_unparsed_ratio must be between 0 and 1, not 1.5"),
    ({"max_unparsed_ratio": -0.1}, "max_unparsed_ratio must be between 0 and 1"),
    ({"fusion": "median"}, "fusion must be one of min, mean, max, not 'median'"),
    ({"engine": "duckdb"}, "engine must be one of polars, spark, not 'duckdb'"),
    ({"detectors": ("iforest", "lof")}, "detectors: unknown detector lof"),
    ({"detectors": ()}, r"detectors: unknown detector \(none given\)"),
    ({"real_ip_header": "x-client-ip"}, "real_ip_header must be one of x-forwarded-for"),
    ({"trusted_proxies": PROXIES}, "trusted_proxies needs real_ip_header"),
    ({"since": MARCH_10, "until": MARCH_10}, "since .* is not before until"),
    ({"paranoia": 5}, "paranoia must be a CRS paranoia level, 1-4, not 5"),
])
def test_settings_refuse_values_no_run_can_use(fields, message):
    with pytest.raises(SettingError, match=message):
        Settings(**fields)


@pytest.mark.parametrize(("fields", "message"), [
    ({"tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"format_name": "apache2"}, "unknown log format 'apache2'"),
])
def test_settings_refuse_unknown_zones_and_formats(fields, message):
    with pytest.raises(ConfigError, match=message):
        Settings(**fields)


def test_a_value_with_braces_is_shown_as_written():
    with pytest.raises(SettingError, match=r"not '\{x\}'"):
        Settings(fusion="{x}")


@pytest.mark.parametrize("fields", [
    {}, {"threshold": 0}, {"threshold": 100}, {"contamination": 0.5}, {"tz": "Asia/Tokyo"},
    {"detectors": ("iforest",)}, {"fusion": "min"}, {"engine": "spark"}, {"format_name": "nginx"},
    {"real_ip_header": "x-forwarded-for", "trusted_proxies": PROXIES},
    {"since": MARCH_10, "until": datetime(2026, 3, 11, tzinfo=UTC)}, {"max_unparsed_ratio": 0.0},
    {"random_state": np.int64(7)},   # a seed drawn with numpy
])
def test_settings_accept_the_edges_of_each_range(fields):
    assert Settings(**fields)


@pytest.mark.parametrize(("argv", "message"), [
    (["--threshold", "150"], "error: --threshold must be between 0 and 100, not 150.0"),
    (["--contamination", "0.9"], "error: --contamination must be in (0, 0.5], not 0.9"),
    (["--seed", "-1"], "error: --seed must be a whole number of at least 0, not -1"),
    (["--trusted-proxies", "10.0.0.0/8"], "error: --trusted-proxies needs --real-ip-header"),
    (["--tz", "Mars/Olympus"], "error: unknown time zone 'Mars/Olympus'"),
])
def test_the_cli_relies_on_settings_and_names_its_flags(capsys, argv, message):
    assert log_analyser.main(["-f", SMALL, *argv]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


@pytest.mark.parametrize("command", [["train", "--save", "unused"], ["evaluate", "--labels", "unused.csv"]])
def test_train_and_evaluate_rely_on_settings_too(capsys, command, tmp_path):
    argv = [command[0], "-f", SMALL, *command[1:], "--seed", "-2"]
    assert log_analyser.main(argv) == ExitCode.USAGE
    assert capsys.readouterr().err.startswith("error: --seed must be a whole number of at least 0, not -2")
    assert not (tmp_path / "unused").exists()
