"""Which features drove each detector's score for a client, in numbers and plain sentences.

Isolation Forest: path-based attributions (Saabas-style, on path length; detectors/forest.py): each
split on a client's path is credited with the change of its expected path length.
Autoencoder: each feature's squared reconstruction error, counted where the client lies further from
the typical client than its reconstruction does (the network could not follow that deviation); errors
where the reconstruction strays from a typical value are side effects of the other features.
Contributions are positive when the feature made the client look more anomalous.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np

from anomaly_detector import Baseline, IsolationForestDetector
from log_analyser_core.features.client import BY_NAME
from log_analyser_core.results import Contribution

if TYPE_CHECKING:
    from log_analyser_core.detectors.autoencoder import AutoencoderDetector

LIMIT = 3  # contributions kept per detector and client
DETECTOR_LABELS = {"iforest": "Isolation Forest", "autoencoder": "autoencoder"}


def forest_contributions(detector: IsolationForestDetector, X: np.ndarray) -> np.ndarray:
    """(n_clients, n_features) path length removed by each feature, averaged over the trees
    (detectors/forest.py). Higher = the feature isolated the client faster (more anomalous)."""
    return detector.contributions(X)


def explain(baseline: Baseline, X: np.ndarray, rows: Sequence[int],
            limit: int = LIMIT) -> list[dict[str, tuple[Contribution, ...]]]:
    """For each row index in ``rows``: {detector name: its top ``limit`` contributions}, largest first."""
    if not rows:
        return []
    subset = X[list(rows)]
    matrices = {}
    for name, detector in baseline.detectors.items():
        if name == "iforest":
            matrices[name] = forest_contributions(cast(IsolationForestDetector, detector), subset)
        else:
            matrices[name] = cast("AutoencoderDetector", detector).unexplained_errors(subset)
    return [{name: _top(matrix[k], subset[k], baseline, limit) for name, matrix in matrices.items()}
            for k in range(len(rows))]


def _top(contributions: np.ndarray, x: np.ndarray, baseline: Baseline, limit: int) -> tuple[Contribution, ...]:
    positive = np.clip(contributions, 0.0, None)
    total = positive.sum()
    order = [i for i in np.argsort(-contributions, kind="stable")[:limit] if contributions[i] > 0]
    return tuple(Contribution(feature=baseline.features[i], value=_original(baseline.features[i], x[i]),
                              typical=float(baseline.typical[i]), contribution=float(contributions[i]),
                              share=float(positive[i] / total) if total > 0 else 0.0) for i in order)


def _original(feature: str, value: float) -> float:
    """Undo feature_matrix's log1p for heavy-tailed features: the value in the feature's own unit."""
    return float(np.expm1(value)) if BY_NAME[feature].heavy_tailed else float(value)


def sentences(contributions: dict[str, tuple[Contribution, ...]], row: dict) -> list[str]:
    """Plain sentences, e.g. 'Isolation Forest (41% of the score): 50.0 requests per minute ... (typical 0.9)'."""
    lines = []
    for name, items in contributions.items():
        for item in items:
            text = BY_NAME[item.feature].reason.format(v=item.value, t=item.typical, r=row)
            lines.append(f"{DETECTOR_LABELS.get(name, name)} ({item.share:.0%} of its score): {text}")
    return lines
