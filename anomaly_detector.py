"""Unsupervised scoring of per-client feature tables.

Detectors follow scikit-learn's conventions (``fit``, ``score_samples``, learned attributes end
in ``_``, ``random_state`` everywhere). One score direction across the code: higher = more anomalous.
"""
from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import polars as pl

from log_analyser_core.detectors import forest, forest_process
from log_analyser_core.detectors.forest import SPLIT_ROWS, forest_scores  # noqa: F401 - SPLIT_ROWS re-exported
from log_analyser_core.errors import ConfigError
from log_analyser_core.features.client import BY_NAME
from log_analyser_core.results import Deviation, Severity

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import RobustScaler

log = logging.getLogger(__name__)
# Score bands (0-100 score, lower bound inclusive) and the severity each one means.
SEVERITY_BANDS = ((80.0, "critical"), (60.0, "high"), (40.0, "medium"), (20.0, "low"), (0.0, "info"))
LOG_SCALE_FLOOR = 0.5     # smallest spread of log1p(value) for heavy-tailed features (~1.65x)
REASON_MIN_Z = 3.0        # a feature is a reason when it is this many robust spreads above typical
# s(x) of an unremarkable point is about 0.5; on real logs the most isolated clients reach
# 0.7-0.85 (measured on the shared public logs), so that range spans the 0-100 score.
ORDINARY_S, EXTREME_S = 0.5, 0.85
MIN_CLIENTS = 3           # fewer clients than this cannot be compared with each other
# Past this many clients the detectors, the score scale and the typical values are fitted on a
# uniform sample of this many (seeded with random_state); every client is still scored. The
# table is one row per client (on Spark, the driver's only large input): the sample bounds the
# driver's fitting time (the autoencoder's epochs, the forest's reference scores) on huge sites.
FIT_CLIENTS = 1_000_000


def severity_for(score: float) -> Severity:
    """The severity band a 0-100 score falls in (see SEVERITY_BANDS)."""
    for lower, name in SEVERITY_BANDS:
        if score >= lower:
            return Severity[name.upper()]
    return Severity.INFO


_LAST_MATRIX: list[tuple[weakref.ref[pl.DataFrame], tuple[str, ...], np.ndarray]] = []


def feature_matrix(table: pl.DataFrame, features: Sequence[str]) -> np.ndarray:
    """(n_clients, n_features) float matrix; heavy-tailed features on a log1p scale, nulls as 0.
    Read-only: the last table's matrix is kept while that table lives and given again (a run
    asks for it to fit, to score and to measure deviations: 200 MB a million clients, each time)."""
    names = tuple(features)
    for held, held_names, matrix in _LAST_MATRIX:
        if held() is table and held_names == names:
            return matrix
    X = _feature_matrix(table, names)
    X.flags.writeable = False
    _LAST_MATRIX[:] = [(weakref.ref(table), names, X)]
    return X


def _feature_matrix(table: pl.DataFrame, features: Sequence[str]) -> np.ndarray:
    if not features:
        return np.zeros((table.height, 0))
    # one copy out of Polars into a row-major matrix (a column stacked at a time cost three)
    X = table.select([pl.col(name).cast(pl.Float64).fill_null(0.0).fill_nan(0.0) for name in features]) \
        .to_numpy(order="c", writable=True)
    for i, name in enumerate(features):
        if BY_NAME[name].heavy_tailed:
            X[:, i] = np.log1p(np.clip(X[:, i], 0.0, None))
    return X


class IsolationForestDetector:
    """Isolation Forest over robust-scaled features.

    ``score_samples`` returns the anomaly score s(x) of Liu et al. (2008) in (0, 1]: about 0.5
    for an ordinary point, approaching 1 for points isolated in few splits. Higher = more anomalous.
    With ``remote`` (a run's forest_process.ForestProcess) the forest is fitted (or read) and held in
    that process, and made here instead if the process is lost: the same forest either way.
    """

    name = "iforest"
    # while ``remote`` holds the forest: makes the same scaler and forest here, should it be lost
    _here: Callable[[], tuple[RobustScaler, IsolationForest]] | None = None
    # a saved model's forest as arrays (forest.Trees): scored in NumPy, no scikit-learn object held
    trees_: forest.Trees | None = None

    def __init__(self, n_estimators: int = 200, max_samples: int | str = "auto", random_state: int = 0,
                 remote: forest_process.ForestProcess | None = None) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state
        self.remote = remote

    def fit(self, X: np.ndarray) -> IsolationForestDetector:
        # the last matrix scored (its digest, scores and itself): scores of the previous fit do not hold
        self._memo: tuple[tuple, np.ndarray, weakref.ref[np.ndarray]] | None = None
        here = partial(forest.fit, X, self.n_estimators, self.max_samples, self.random_state)
        if not self._held(lambda remote: remote.fit(X, self.n_estimators, self.max_samples, self.random_state), here):
            self._make_here(here)
        return self

    def load(self, path: str, width: int) -> dict:
        """Read a saved forest (forest.load: checked, forest.Refused if it cannot be used) into
        ``remote`` when there is one, else here; the detector's saved parameters."""
        self._memo = None
        params: list[dict] = []
        if self._held(lambda remote: params.append(remote.load(path, width)), lambda: forest.load(path, width)[:2]):
            return params[0]
        self.scaler_, self.forest_, saved = forest.load(path, width)
        self.remote = None
        return saved

    def use_trees(self, trees: forest.Trees) -> None:
        """Score with ``trees`` (a saved model's forest, read by model_store) from now on."""
        self._memo, self.trees_, self.remote, self._here = None, trees, None, None

    def trees(self) -> forest.Trees:
        """The fitted scaler and forest as arrays, as a model saves them."""
        if self.trees_ is not None:
            return self.trees_
        return forest.Trees.of(*self.local(), {"n_estimators": self.n_estimators, "max_samples": self.max_samples,
                                               "random_state": self.random_state})

    def _held(self, ask: Callable[[forest_process.ForestProcess], object],
              here: Callable[[], tuple[RobustScaler, IsolationForest]]) -> bool:
        """Whether ``remote`` now holds the forest that ``ask`` made there (``here`` makes it here)."""
        self._here = None
        if self.remote is None:
            return False
        try:
            ask(self.remote)
        except forest_process.Lost as lost:
            _lost(lost)
            self.remote = None
            return False
        self._here = here
        self.remote.holder = self
        return True

    def _make_here(self, here: Callable[[], tuple[RobustScaler, IsolationForest]]) -> None:
        self.scaler_, self.forest_ = here()
        self.remote, self._here = None, None

    def local(self) -> tuple[RobustScaler, IsolationForest]:
        """The fitted scaler and forest in this process (made here now if they were held remotely)."""
        if self._here is not None:
            self._make_here(self._here)
        return self.scaler_, self.forest_

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        # A run scores the same clients up to three times (the fit's reference, the 0-100 scale, the
        # verdict): with a million clients each pass is most of a minute, so the last answer is kept.
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[2]() is X:   # the very matrix (fit_baseline scores it twice): no digest
            return memo[1].copy()
        key = _fingerprint(X)
        if memo is not None and memo[0] == key:
            return memo[1].copy()
        unique, inverse = _distinct_rows(X)
        # sklearn returns -s(x) (higher = more normal); invert it once, here.
        scores = -self._forest_scores(unique)[inverse]
        self._memo = (key, scores, weakref.ref(X))
        return scores.copy()

    def _forest_scores(self, X: np.ndarray) -> np.ndarray:
        if self.trees_ is not None:
            return self.trees_.scores(X)
        return self._answer(lambda remote: remote.scores(X),
                            lambda scaler, fitted: forest_scores(fitted, scaler.transform(X)))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """forest.path_contributions of the rows of X (see detectors/attribution.py)."""
        if self.trees_ is not None:
            return self.trees_.contributions(X)
        return self._answer(lambda remote: remote.contributions(X),
                            lambda scaler, fitted: forest.path_contributions(scaler, fitted, X))

    def _answer(self, there: Callable[[forest_process.ForestProcess], np.ndarray],
                here: Callable[[RobustScaler, IsolationForest], np.ndarray]) -> np.ndarray:
        """``there`` asked of the process that holds the forest, or else ``here`` of the forest in
        this process (made here first if the process is lost)."""
        if self.remote is not None and self._here is not None and self.remote.holder is self:
            try:
                return there(self.remote)
            except forest_process.Lost as lost:
                _lost(lost)
        return here(*self.local())

    def __getstate__(self) -> dict:
        # the memo is the last table's scores (8 MB a million clients): not part of the model that is
        # pickled to Spark's executors; a forest held by a process is fitted here first
        if self.trees_ is None:
            self.local()
        return {name: value for name, value in self.__dict__.items() if name not in ("_memo", "remote")} | \
            {"remote": None}


def _lost(lost: forest_process.Lost) -> None:
    log.info("the Isolation Forest's process: %s; fitting it in this one", lost)


def _fingerprint(X: np.ndarray) -> tuple:
    """Shape, type and a digest of the values: equal for equal matrices (a hash of 200 MB takes
    a fraction of a second; scoring it, most of a minute)."""
    import hashlib

    data = np.ascontiguousarray(X)
    return data.shape, data.dtype.str, hashlib.blake2b(data.data, digest_size=16).digest()


def _distinct_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct rows of X, the index of each row among them). Clients that behave alike have
    equal rows (a million addresses each sending one request: a few thousand rows), and a forest
    scores each row 200 times; the same score is computed once."""
    if len(X) < DISTINCT_ROWS_FROM or not np.isfinite(X).all():
        return X, np.arange(len(X))
    import polars as pl

    columns = [f"f{i}" for i in range(X.shape[1])]
    # a hash group-by: np.unique(axis=0) sorts the rows and costs more than the scoring it saves
    groups = pl.DataFrame(X, schema=columns).with_row_index("_row").group_by(columns, maintain_order=True) \
        .agg("_row").with_row_index("_group")
    if groups.height > len(X) * DISTINCT_ROWS_SHARE:
        return X, np.arange(len(X))
    members = groups.select("_group", "_row").explode("_row")
    inverse = np.empty(len(X), dtype=np.int64)
    inverse[members["_row"].to_numpy()] = members["_group"].to_numpy()
    return groups.select(columns).to_numpy(), inverse


# The detectors a Spark run scores on its executors, batch by batch (engines/spark.py): the forest's
# score of a row is elementwise arithmetic over that row's tree depths. The autoencoder scores on the
# driver, over the whole table as locally: its float32 matrix products go through BLAS, whose order
# of summation may follow the shape of the call (a one-row batch is a matrix-vector product), so
# a batch's scores are not guaranteed to equal, to the last bit, those the whole table gets.
ROW_EXACT_DETECTORS = ("iforest",)
DISTINCT_ROWS_FROM = 10_000   # fewer clients are scored row by row (grouping would cost more than it saves)
DISTINCT_ROWS_SHARE = 0.8     # and so are tables whose rows are nearly all distinct
# Detectors by name, in the order they run and are reported.
DETECTOR_NAMES = ("iforest", "autoencoder")
EXTRAPOLATE_RATIO = 10.0  # a raw score this many times the reference maximum maps to 100
# How detector scores combine (fuse()). On the sets bench/eval_detectors.py measures, "mean" was never
# worse than the forest alone and better on the planted logs; "min" had fewer false positives on the
# real logs but missed one planted attacker (see README, Detection quality).
FUSIONS = ("min", "mean", "max")
# What an analysis fits on the log itself when neither --detectors nor --model says otherwise. The
# autoencoder learns "normal" from what it is trained on; fitted on a log full of attackers it cost
# 5x the time and 3x the memory for identical verdicts on the labelled benchmark (README,
# Performance), so its place is a baseline trained on trusted traffic (log_analyser train).
ANALYSE_DETECTORS = ("iforest",)
DEFAULT_FUSION = "mean"
# Below 50 clients the network's 10% early-stopping hold-out is under 5 clients: too few to stop on.
MIN_CLIENTS_FOR = {"iforest": MIN_CLIENTS, "autoencoder": 50}


def available_detectors() -> tuple[str, ...]:
    """Detectors whose dependencies are installed (imports nothing heavy)."""
    from log_analyser_core.detectors import autoencoder

    return tuple(name for name in DETECTOR_NAMES if name != "autoencoder" or autoencoder.available())


def resolve_detectors(names: Sequence[str] | None) -> tuple[str, ...]:
    """Validate requested detector names; None means every installed detector.

    Raises ConfigError for an unknown name and MissingExtraError for one whose extra is missing.
    """
    if names is None:
        return available_detectors()
    unknown = [name for name in names if name not in DETECTOR_NAMES]
    if unknown or not names:
        raise ConfigError(f"unknown detector {', '.join(unknown) or '(none given)'}",
                          hint=f"choose from {', '.join(DETECTOR_NAMES)}")
    if "autoencoder" in names:
        from log_analyser_core.detectors import autoencoder

        autoencoder.require()
    return tuple(name for name in DETECTOR_NAMES if name in names)


def make_detector(name: str, features: Sequence[str], *, n_estimators: int = 200, random_state: int = 0,
                  remote: forest_process.ForestProcess | None = None):
    """A fresh, unfitted detector by name, for a feature matrix with these columns (a forest held
    by ``remote``, when given)."""
    if name == "autoencoder":
        from log_analyser_core.detectors.autoencoder import AutoencoderDetector

        return AutoencoderDetector(min_scale=spread_floors(features).tolist(), random_state=random_state)
    return IsolationForestDetector(n_estimators=n_estimators, random_state=random_state, remote=remote)


class Detector(Protocol):
    """What every fitted detector offers: a raw score for each row of a feature matrix."""

    def score_samples(self, X: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Baseline:
    """Fitted detectors and the reference clients they were fitted on (the run itself, or a trusted period).

    ``scale`` is the Isolation Forest's sorted 0-100 scores over the reference clients: the common scale
    every other detector is quantile-mapped onto; ``reference[name]`` the detector's sorted raw scores
    there; ``typical`` the median reference client's features (original units), for explanations.
    """

    features: tuple[str, ...]
    detectors: dict[str, Detector]
    scale_model: IsolationForestDetector
    reference: dict[str, np.ndarray]
    scale: np.ndarray
    typical: np.ndarray
    clients: int
    center: np.ndarray | None = None   # median reference client in feature_matrix units (for reasons)
    spread: np.ndarray | None = None   # robust spread there, at least spread_floors()
    skipped: tuple[str, ...] = ()   # detectors requested but not fitted (too few clients)


def fit_baseline(table: pl.DataFrame, used: Sequence[str], detectors: Sequence[str], *,
                 n_estimators: int = 200, random_state: int = 0,
                 remote: forest_process.ForestProcess | None = None) -> Baseline:
    """Fit the named detectors (and the forest that defines the 0-100 scale) on a feature table
    (one row per client; a FIT_CLIENTS sample of it when larger); the forest in ``remote`` if given."""
    table = fit_sample(table, random_state)
    X = feature_matrix(table, used)
    skipped = tuple(name for name in detectors if table.height < MIN_CLIENTS_FOR[name])
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="baseline") as pool:
        # the median client and the spread (NumPy's partitions release the GIL) while the detectors fit
        robust = pool.submit(lambda: (column_medians(X), robust_spread(X, used), typical_values(table, used)))
        return _fitted(X, used, detectors, skipped, robust, table.height, n_estimators, random_state, remote)


def _fitted(X: np.ndarray, used: Sequence[str], detectors: Sequence[str], skipped: tuple[str, ...],
            robust: Future, clients: int, n_estimators: int, random_state: int,
            remote: forest_process.ForestProcess | None) -> Baseline:
    made = partial(make_detector, features=used, n_estimators=n_estimators, random_state=random_state, remote=remote)
    fitted = {name: made(name).fit(X) for name in detectors if name not in skipped}
    scale_model = fitted.get("iforest") or made("iforest").fit(X)
    reference = {name: np.sort(detector.score_samples(X)) for name, detector in fitted.items()}
    center, spread, typical = robust.result()
    return Baseline(features=tuple(used), detectors=fitted, scale_model=scale_model, reference=reference,
                    scale=np.sort(calibrate(scale_model.score_samples(X))), typical=typical,
                    clients=clients, center=center, spread=spread, skipped=skipped)


def fit_sample(table: pl.DataFrame, random_state: int = 0) -> pl.DataFrame:
    """The clients the detectors are fitted on: every row of ``table`` up to FIT_CLIENTS, else the
    FIT_CLIENTS whose seeded hash of client_ip (``fit_keys``) is lowest, in the table's order. A
    sample drawn by address, not by row: Spark draws the same one without bringing every client
    to the driver (engines/spark.py)."""
    if table.height <= FIT_CLIENTS:
        return table
    keys = pl.Series("_key", fit_keys(table["client_ip"].cast(pl.String).to_list(), random_state))
    ranked = table.with_columns(keys, pl.col("client_ip").cast(pl.String).alias("_ip"))
    picked = ranked.with_row_index("_row").sort("_key", "_ip").head(FIT_CLIENTS).sort("_row")
    return picked.drop("_row", "_key", "_ip")


def fit_keys(client_ips: Sequence[str], random_state: int = 0) -> np.ndarray:
    """A 63-bit key per address (int64), from a BLAKE2b hash keyed with ``random_state``: the same
    on every machine and Python process (unlike ``hash``), so a sample by lowest key is reproducible."""
    import hashlib

    seed = random_state.to_bytes(8, "little", signed=False)
    return np.fromiter((int.from_bytes(hashlib.blake2b(ip.encode(), key=seed, digest_size=8).digest(), "little") >> 1
                        for ip in client_ips), dtype=np.int64, count=len(client_ips))


def typical_values(table: pl.DataFrame, features: Sequence[str]) -> np.ndarray:
    """The median client's value of each feature, in the feature's own unit (nulls as 0)."""
    return np.array([float(cast(float, table[f].fill_null(0.0).fill_nan(0.0).median() or 0.0)) for f in features])


def score_with(baseline: Baseline, table: pl.DataFrame,
               fusion: str = DEFAULT_FUSION) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(fused 0-100 score, each detector's 0-100 score) for every client of ``table``."""
    own = detector_scores(baseline, table)
    return fuse(own, fusion), own


def detector_scores(baseline: Baseline, table: pl.DataFrame,
                    names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Each detector's 0-100 score (higher = more anomalous) for every row of ``table``, for the
    detectors of ``baseline`` named in ``names`` (None: all), in the baseline's order. For the
    ROW_EXACT_DETECTORS a row's score depends on that row alone, so Spark applies this function to
    each Arrow batch of clients on the executors and gets the scores the whole table gets here."""
    X = feature_matrix(table, baseline.features)
    own = {}
    for name, detector in baseline.detectors.items():
        if names is not None and name not in names:
            continue
        raw = detector.score_samples(X)
        own[name] = calibrate(raw) if name == "iforest" else quantile_map(raw, baseline.reference[name],
                                                                           baseline.scale)
    return own


def fuse(scores: dict[str, np.ndarray], how: str = DEFAULT_FUSION) -> np.ndarray:
    """Combine calibrated detector scores (all 0-100, higher = more anomalous) into one: their minimum
    (the detectors must agree), mean or maximum (either detector suffices)."""
    if how not in FUSIONS:
        raise ConfigError(f"unknown fusion {how!r}", hint=f"choose from {', '.join(FUSIONS)}")
    stacked = np.vstack(list(scores.values()))
    reduce: dict[str, Callable[..., np.ndarray]] = {"min": stacked.min, "mean": stacked.mean, "max": stacked.max}
    return reduce[how](axis=0)


def quantile_map(raw: np.ndarray, reference: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Map raw scores onto the common 0-100 scale by their quantile among the reference clients.

    A raw score at the q-th quantile of ``reference`` (sorted raw scores) gets the q-th quantile of
    ``scale`` (sorted 0-100 scores). Above the reference maximum the score keeps rising on a log scale,
    reaching 100 at EXTRAPOLATE_RATIO times that maximum, so a baseline cannot cap a new extreme.
    """
    values, first = np.unique(reference, return_index=True)
    counts = np.diff(np.r_[first, len(reference)])
    targets = np.add.reduceat(scale, first) / counts   # tied reference scores share their mean rank
    mapped = np.interp(raw, values, targets)
    top, ceiling = values[-1], targets[-1]
    if top > 0:
        above = np.log(np.maximum(raw, top) / top) / np.log(EXTRAPOLATE_RATIO)
        mapped = np.where(raw > top, ceiling + (100.0 - ceiling) * np.clip(above, 0.0, 1.0), mapped)
    return np.clip(mapped, 0.0, 100.0)


def score_clients(table: pl.DataFrame, used: Sequence[str], *, n_estimators: int = 200, random_state: int = 0,
                  detectors: Sequence[str] | None = None, baseline: Baseline | None = None,
                  fusion: str = DEFAULT_FUSION) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """Score every client of a feature table on 0-100 (higher = more anomalous).

    ``detectors`` names the detectors to fit on the table itself (None: every installed one);
    ``baseline`` instead scores against detectors fitted on a trusted period (model_store);
    ``fusion`` combines the detectors' scores (see fuse()).
    Returns (fused score per row, each detector's own 0-100 score by name, notes for the user).
    """
    if baseline is None and table.height < MIN_CLIENTS:
        return np.zeros(table.height), {}, [too_few_note(table.height)]
    if baseline is None:
        baseline = fit_baseline(table, used, resolve_detectors(detectors), n_estimators=n_estimators,
                                random_state=random_state)
    fused, own = score_with(baseline, table, fusion)
    return fused, own, [detectors_note(baseline, fusion)]


def too_few_note(clients: int) -> str:
    """The summary's note when there are too few clients to fit the detectors (below MIN_CLIENTS)."""
    return f"only {clients} client(s): too few to compare, no anomaly scores"


def detectors_note(baseline: Baseline, fusion: str = DEFAULT_FUSION) -> str:
    """Which detectors ran and how their scores were combined, for the run summary."""
    names = " and ".join(baseline.detectors)
    text = f"detectors: {names}"
    if len(baseline.detectors) > 1:
        text += f", scores quantile-mapped to one 0-100 scale and combined by {fusion}"
    for name in baseline.skipped:
        text += f"; {name} not run: {baseline.clients} clients are too few to fit it (needs {MIN_CLIENTS_FOR[name]})"
    return text


def calibrate(raw: np.ndarray) -> np.ndarray:
    """Map Isolation Forest scores s(x) to 0-100, linear between ORDINARY_S (0) and EXTREME_S (100)."""
    return np.clip((raw - ORDINARY_S) / (EXTREME_S - ORDINARY_S) * 100.0, 0.0, 100.0)


def robust_z(table: pl.DataFrame, features: Sequence[str],
             reference: Baseline | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(z matrix, typical values): per-feature robust z-scores against the median client.

    The median client is the table's own, or with ``reference`` (a trained baseline) the trusted period's.
    """
    X = feature_matrix(table, features)
    if reference is not None and reference.center is not None and tuple(features) == reference.features:
        return (X - reference.center) / reference.spread, reference.typical
    if X.shape[0] == 0:
        return X, np.zeros(len(features))
    z = (X - column_medians(X)) / robust_spread(X, features)
    return z, typical_values(table, features)


def robust_spread(X: np.ndarray, features: Sequence[str]) -> np.ndarray:
    """Per feature: 1.4826 * MAD of X's columns (a standard deviation for normal data), at least the floor."""
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        mad = np.median(np.abs(X - np.median(X, axis=0)), axis=0) * 1.4826
    else:   # a column at a time: the matrix's deviations are not held at once
        mad = np.array([np.median(np.abs(X[:, i] - np.median(X[:, i]))) for i in range(X.shape[1])]) * 1.4826
    return np.maximum(mad, spread_floors(features))


def column_medians(X: np.ndarray) -> np.ndarray:
    """``np.median(X, axis=0)``, a column at a time: the same values, several times faster on a
    million rows (each column is copied once and partitioned, not the strided matrix)."""
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        return np.median(X, axis=0)
    return np.array([np.median(X[:, i]) for i in range(X.shape[1])], dtype=np.result_type(X, np.float64))


def spread_floors(features: Sequence[str]) -> np.ndarray:
    """Per feature, the smallest spread a deviation is measured in (feature_matrix units)."""
    return np.array([LOG_SCALE_FLOOR if BY_NAME[f].heavy_tailed else BY_NAME[f].floor for f in features])


def top_deviations_of(z_rows: np.ndarray, values: np.ndarray | Sequence[Sequence[float]], typical: np.ndarray,
                      features: Sequence[str], limit: int = 3) -> list[list[Deviation]]:
    """Each client's features furthest above typical (z >= REASON_MIN_Z), at most ``limit``, largest
    first (``z_rows``: the clients' rows of z; ``values``: theirs): sorted in one call for all."""
    if not len(z_rows):
        return []
    order = np.argsort(-z_rows, axis=1, kind="stable")[:, :limit]
    above = np.take_along_axis(z_rows, order, axis=1) >= REASON_MIN_Z   # a prefix of each row: sorted
    return [[Deviation(features[i], float(row_values[i]), float(typical[i]), float(z_row[i]))
             for i in picked[keep]]
            for z_row, row_values, picked, keep in zip(z_rows, values, order, above, strict=True)]


class Row(Protocol):
    """A client's row as a reason's template reads it: its values by column name."""

    def __getitem__(self, name: str, /) -> Any: ...


def describe(deviation: Deviation, row: Row | dict) -> str:
    """The deviation as a sentence, e.g. '92% of 480 requests returned 4xx (typical 2%)'."""
    return BY_NAME[deviation.feature].reason.format(v=deviation.value, t=deviation.typical, r=row)
