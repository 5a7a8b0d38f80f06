"""Unsupervised scoring of per-client feature tables.

Detectors follow scikit-learn's conventions (``fit``, ``score_samples``, learned attributes end
in ``_``, ``random_state`` everywhere). One score direction across the code: higher = more anomalous.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import polars as pl

from evidence import Severity
from ip_features import BY_NAME

# Score bands (0-100 score, lower bound inclusive) and the severity each one means.
SEVERITY_BANDS = ((80.0, "critical"), (60.0, "high"), (40.0, "medium"), (20.0, "low"), (0.0, "info"))
LOG_SCALE_FLOOR = 0.5     # smallest spread of log1p(value) for heavy-tailed features (~1.65x)
REASON_MIN_Z = 3.0        # a feature is a reason when it is this many robust spreads above typical
# s(x) of an unremarkable point is about 0.5; on real logs the most isolated clients reach
# 0.7-0.85 (measured on the shared public logs), so that range spans the 0-100 score.
ORDINARY_S, EXTREME_S = 0.5, 0.85
MIN_CLIENTS = 3           # fewer clients than this cannot be compared with each other


def severity_for(score: float) -> Severity:
    """The severity band a 0-100 score falls in (see SEVERITY_BANDS)."""
    for lower, name in SEVERITY_BANDS:
        if score >= lower:
            return Severity[name.upper()]
    return Severity.INFO


def feature_matrix(table: pl.DataFrame, features: Sequence[str]) -> np.ndarray:
    """(n_clients, n_features) float matrix; heavy-tailed features on a log1p scale, nulls as 0."""
    columns = []
    for name in features:
        values = table[name].fill_null(0.0).fill_nan(0.0).to_numpy().astype(np.float64)
        columns.append(np.log1p(np.clip(values, 0.0, None)) if BY_NAME[name].heavy_tailed else values)
    return np.column_stack(columns) if columns else np.zeros((table.height, 0))


class IsolationForestDetector:
    """Isolation Forest over robust-scaled features.

    ``score_samples`` returns the anomaly score s(x) of Liu et al. (2008) in (0, 1]: about 0.5
    for an ordinary point, approaching 1 for points isolated in few splits. Higher = more anomalous.
    """

    name = "iforest"

    def __init__(self, n_estimators: int = 200, max_samples: int | str = "auto", random_state: int = 0) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state

    def fit(self, X: np.ndarray) -> IsolationForestDetector:
        from sklearn.ensemble import IsolationForest
        from sklearn.preprocessing import RobustScaler

        self.scaler_ = RobustScaler().fit(X)
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                                       random_state=self.random_state, n_jobs=1)
        self.forest_.fit(self.scaler_.transform(X))
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        # sklearn returns -s(x) (higher = more normal); invert it once, here.
        return -self.forest_.score_samples(self.scaler_.transform(X))


def score_clients(table: pl.DataFrame, used: Sequence[str], *, n_estimators: int = 200,
                  random_state: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """Score every client of a feature table on 0-100 (higher = more anomalous).

    Returns (fused score per row, each detector's own 0-100 score by name, notes for the user).
    """
    if table.height < MIN_CLIENTS:
        note = f"only {table.height} client(s): too few to compare, no anomaly scores"
        return np.zeros(table.height), {}, [note]
    X = feature_matrix(table, used)
    forest = IsolationForestDetector(n_estimators=n_estimators, random_state=random_state).fit(X)
    scores = calibrate(forest.score_samples(X))
    return scores, {forest.name: scores}, []


def calibrate(raw: np.ndarray) -> np.ndarray:
    """Map Isolation Forest scores s(x) to 0-100, linear between ORDINARY_S (0) and EXTREME_S (100)."""
    return np.clip((raw - ORDINARY_S) / (EXTREME_S - ORDINARY_S) * 100.0, 0.0, 100.0)


@dataclass(frozen=True)
class Deviation:
    """How far one client's feature lies above the site's typical client."""

    feature: str
    value: float
    typical: float
    z: float      # robust z-score: (value - median) / max(1.4826 * MAD, floor), log scale if heavy-tailed


def robust_z(table: pl.DataFrame, features: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(z matrix, typical values): per-feature robust z-scores against the median client."""
    X = feature_matrix(table, features)
    if X.shape[0] == 0:
        return X, np.zeros(len(features))
    median = np.median(X, axis=0)
    mad = np.median(np.abs(X - median), axis=0) * 1.4826
    floors = np.array([LOG_SCALE_FLOOR if BY_NAME[f].heavy_tailed else BY_NAME[f].floor for f in features])
    z = (X - median) / np.maximum(mad, floors)
    typical = np.array([cast(float, table[f].fill_null(0.0).median() or 0.0) for f in features])
    return z, typical


def top_deviations(z_row: np.ndarray, values: Sequence[float], typical: np.ndarray,
                   features: Sequence[str], limit: int = 3) -> list[Deviation]:
    """The client's features furthest above typical (z >= REASON_MIN_Z), largest first."""
    order = np.argsort(-z_row, kind="stable")
    picked = [i for i in order if z_row[i] >= REASON_MIN_Z][:limit]
    return [Deviation(features[i], float(values[i]), float(typical[i]), float(z_row[i])) for i in picked]


def describe(deviation: Deviation, row: dict) -> str:
    """The deviation as a sentence, e.g. '92% of 480 requests returned 4xx (typical 2%)'."""
    return BY_NAME[deviation.feature].reason.format(v=deviation.value, t=deviation.typical, r=row)
