"""`train` and `analyse` read a log on one path: a baseline learns the features it is later compared with."""
from __future__ import annotations

import polars as pl
import pytest
from conftest import ROOT
from polars.testing import assert_frame_equal

import anomaly_detector
import log_analyser
from log_analyser_core import pipeline
from log_analyser_core.errors import ExitCode
from log_analyser_core.pipeline import Settings

SMALL = str(ROOT / "tests" / "data" / "small.log")
NIGHT_OWL = "198.51.100.99"   # logs 03:10 at +0100: night there, noon in Tokyo


@pytest.fixture
def trained_tables(monkeypatch):
    """The per-client tables ``train`` fits on, recorded (small.log has fewer clients than a real
    baseline needs, so the minimum is lowered for the test)."""
    tables: list[pl.DataFrame] = []
    fit = anomaly_detector.fit_baseline

    def recording(table, *args, **kwargs):
        tables.append(table)
        return fit(table, *args, **kwargs)

    monkeypatch.setattr(pipeline, "TRAIN_MIN_CLIENTS", 1)
    monkeypatch.setattr(anomaly_detector, "fit_baseline", recording)
    return tables


@pytest.mark.parametrize(("tz", "night_ratio"), [("Asia/Tokyo", 0.0), ("UTC", 1.0)])   # UTC: the logged offset
def test_train_and_analyse_compute_the_same_feature_table(trained_tables, tmp_path, tz, night_ratio):
    settings = Settings(tz=tz, detectors=("iforest",))
    pipeline.train([SMALL], str(tmp_path / "model"), settings)
    analysed = pipeline.analyse([SMALL], settings).features
    trained, fitted_when_scoring = trained_tables   # analyse fits its own forest on the log, too
    assert_frame_equal(trained, analysed)
    assert_frame_equal(fitted_when_scoring, analysed)
    night = dict(zip(analysed["client_ip"], analysed["night_ratio"], strict=True))
    assert night[NIGHT_OWL] == night_ratio


def test_the_cli_trains_on_the_tables_it_scores(trained_tables, tmp_path, capsys):
    argv = ["-f", SMALL, "--tz", "Asia/Tokyo", "--detectors", "iforest"]
    assert log_analyser.main(["train", *argv, "--save", str(tmp_path / "m")]) == ExitCode.OK
    assert log_analyser.main([*argv, "--model", str(tmp_path / "m"), "-o", str(tmp_path / "r.csv")]) in (0, 10)
    scored = pl.read_csv(tmp_path / "r.csv").filter(pl.col("ip") == NIGHT_OWL)
    (trained,) = trained_tables   # scoring against the model fits nothing
    assert trained.filter(pl.col("client_ip") == NIGHT_OWL)["night_ratio"].item() == 0.0
    assert scored["night_ratio"].item() == 0.0
