"""Every client's Finding, ranked: the flagged and judged ones made at once, the others (nearly all
of a million distinct clients) read from the per-client table when a writer asks (results.Findings).

The pipeline (log_analyser_core.pipeline) ranks the clients by their verdicts' scores and gives
this module the table, the scores and which clients are flagged; the writers read the result.
"""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple, cast

import numpy as np
import polars as pl

import anomaly_detector as detect
from anomaly_detector import Baseline
from log_analyser_core import verdict
from log_analyser_core.features import client as ip_features
from log_analyser_core.results import Deviation, Finding, Findings, QuietFinding, Severity


def findings(table: pl.DataFrame, used: list[str], scores: np.ndarray, detector_scores: dict[str, np.ndarray],
             flagged: np.ndarray, reasons: int, reference: Baseline | None = None,
             judged_loud: np.ndarray | None = None) -> Findings:
    """Every client's Finding in rank order (highest score first, then by IP). The loud ones
    (flagged, or with something from ``judged_loud``'s verdict) are made now; the others, nearly
    all of a million distinct clients, when read (results.Findings), from ``table``: a quiet one
    as its fields, one that deviates from the typical client with its reasons (at most ``reasons``
    each); ``reference``: the baseline whose median client and spread deviations are measured
    against (None: the table's own)."""
    z, typical = detect.robust_z(table, used, reference)
    # most of a million distinct clients deviate in nothing: they skip the per-row sort
    deviating = np.zeros(table.height, dtype=bool)
    if used and len(z):
        deviating = np.asarray((z >= detect.REASON_MIN_Z).any(axis=1), dtype=bool)
    loud = flagged.copy() if judged_loud is None else flagged | judged_loud
    z = z[deviating]   # the rows reasons are read from (a million clients' z: 200 MB), by deviating_at
    deviating_at = np.cumsum(deviating) - 1
    keys = pl.Series("_key", -verdict.round_like_python(scores, 6), dtype=pl.Float64)
    order = pl.DataFrame([keys, table["client_ip"].cast(pl.String)]) \
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_i")) \
        .sort("_key", "client_ip", maintain_order=True)["_i"].to_numpy()
    rows = _FindingRows(table, order, scores, detector_scores, loud[order],
                        _Reasons(z, deviating_at, deviating, typical, used, reasons))
    positions = np.flatnonzero(loud[order]).tolist()
    made = rows.findings(positions, flagged)
    return Findings(table.height, dict(zip(positions, made, strict=True)), rows.read, rows.frame)


class _Reasons(NamedTuple):
    """What a client's reasons are read from: the rows of robust z of the clients that deviate
    (``at``: a table row's row of ``z``), the typical values, the features used, how many."""

    z: np.ndarray
    at: np.ndarray
    deviating: np.ndarray   # by table row
    typical: np.ndarray
    used: list[str]
    limit: int   # reasons per client


class _Columns(dict):
    """A frame's columns as Python lists, each converted when first read."""

    def __init__(self, frame: pl.DataFrame) -> None:
        super().__init__()
        self.frame = frame

    def __missing__(self, name: str) -> list:
        values = self[name] = self.frame[name].to_list()
        return values


class _Row:
    """Row ``n`` of a frame's columns, as a reason's template reads it (``{r[requests]}``)."""

    def __init__(self, columns: _Columns, n: int) -> None:
        self.columns, self.n = columns, n

    def __getitem__(self, name: str) -> object:
        return self.columns[name][self.n]


class _FindingRows:
    """Findings made from the per-client table's rows, by rank position (0 = rank 1; ``order``: a
    position's table row). The rows are the table's columns a Finding reads, gathered when read and
    read as tuples: a million row dicts at once cost gigabytes, and a dict per row (rather than for
    the few that deviate) time. ``loud``: by rank position, the findings made at once (the others
    are read through ``read`` and ``frame``)."""

    def __init__(self, table: pl.DataFrame, order: np.ndarray, scores: np.ndarray,
                 detector_scores: dict[str, np.ndarray], loud: np.ndarray, reasons: _Reasons) -> None:
        assert tuple(c for c in table.columns if c in ip_features.FEATURE_NAMES) == ip_features.FEATURE_NAMES, \
            "the table holds the features in registry order"
        # a row: ip, requests, errors, first and last seen (apart: 'requests' is a feature too), features
        heads = [pl.col(name).alias(f"_{name}") for name in ("client_ip", "requests", "errors", "first_seen",
                                                               "last_seen")]
        columns = [*heads, *ip_features.FEATURE_NAMES]
        self.columns = table.select(columns)   # the table's own buffers, not a copy
        self.table, self.order, self.scores = table, order, np.asarray(scores, dtype=np.float64)
        self.by_detector = {name: np.asarray(values, dtype=np.float64) for name, values in detector_scores.items()}
        self.features = slice(5, len(columns))
        self.loud, self.reasons_from = loud, reasons

    def _rows(self, positions: list[int] | np.ndarray) -> pl.DataFrame:
        """The rows at rank ``positions``, gathered when read: a copy of the whole table in rank
        order would hold a million clients' columns twice."""
        return self.columns[self.order[positions]]

    def quiet(self, positions: list[int]) -> list[QuietFinding]:
        """The findings at ``positions`` (ascending) as their fields: not flagged, no reasons."""
        rows = self.order[positions].tolist()
        names, features, scores = list(self.by_detector), self.features, self.scores
        severities: dict[float, Severity] = {}
        made = []
        for position, i, row in zip(positions, rows, self._rows(positions).iter_rows(), strict=True):
            score = round(float(scores[i]), 1)
            severity = severities.get(score)
            if severity is None:
                severity = severities[score] = detect.severity_for(score)
            made.append(QuietFinding(
                row[0], position + 1, score, severity, int(row[1]), int(row[2]), row[3], row[4],
                {name: round(float(self.by_detector[name][i]), 1) for name in names},
                dict(zip(ip_features.FEATURE_NAMES, row[features], strict=True))))
        return made

    def reasons(self, rows: np.ndarray) -> dict[int, tuple[tuple[str, ...], tuple[Deviation, ...]]]:
        """For each of the table ``rows`` that deviates (by its index in ``rows``): its reasons and
        deviations, the features furthest above typical sorted for all of them at once."""
        z, at, deviating, typical, used, limit = self.reasons_from
        explained = np.flatnonzero(deviating[rows])
        if not len(explained):
            return {}
        chosen = self.table[rows[explained]]
        values = chosen.select(pl.col(name).cast(pl.Float64).fill_null(0.0) for name in used).to_numpy()
        found = detect.top_deviations_of(z[at[rows[explained]]], values, typical, used, limit)
        columns = _Columns(chosen)   # a reason may name any column of its client's row: read when named
        return {int(k): (tuple(detect.describe(d, _Row(columns, n)) for d in deviations), tuple(deviations))
                for n, (k, deviations) in enumerate(zip(explained, found, strict=True))}

    def findings(self, positions: list[int], flagged: np.ndarray) -> list[Finding]:
        """The Findings at ``positions`` (ascending), with their reasons and deviations; ``flagged``
        by table row."""
        rows = self.order[positions]
        reasoned = self.reasons(rows)
        made = []
        for k, quiet in enumerate(self.quiet(positions)):
            i = int(rows[k])
            reasons, deviations = reasoned.get(k, ((), ()))
            if flagged[i] and not reasons:
                reasons = ("an unusual combination of features, none far from typical on its own",)
            made.append(Finding(ip=quiet.ip, rank=quiet.rank, flagged=bool(flagged[i]), score=quiet.score,
                                severity=quiet.severity, requests=quiet.requests, errors=quiet.errors,
                                first_seen=quiet.first_seen, last_seen=quiet.last_seen, reasons=reasons,
                                deviations=deviations, detector_scores=quiet.detector_scores,
                                features=quiet.features))
        return made

    def read(self, positions: list[int]) -> list[QuietFinding | Finding]:
        """The findings not made at once, at ``positions`` (ascending): a quiet one as its fields,
        one that deviates as a Finding with its reasons (none of them is flagged)."""
        made: list[QuietFinding | Finding] = list(self.quiet(positions))
        for k, (reasons, deviations) in self.reasons(self.order[positions]).items():
            made[k] = replace(cast(QuietFinding, made[k]).finding(), reasons=reasons, deviations=deviations)
        return made

    def frame(self, start: int, stop: int) -> tuple[pl.DataFrame, dict[int, tuple[tuple[str, ...], tuple]]]:
        """The findings not made at once from rank position ``start`` to ``stop`` as columns
        (results.Findings.rows): the values ``quiet`` gives, a column each, for the writers that
        encode whole columns; and the reasons and deviations of those that deviate, by position."""
        positions = np.flatnonzero(~self.loud[start:stop]) + start
        rows = self.order[positions]
        scores = verdict.round_like_python(self.scores[rows])
        severities = {score: detect.severity_for(score).label for score in np.unique(scores).tolist()}
        ranked = self._rows(positions)
        heads = [pl.Series("_position", positions, dtype=pl.Int64), pl.Series("_rank", positions + 1, dtype=pl.Int64),
                 pl.Series("_score", scores, dtype=pl.Float64),
                 pl.Series("_severity", scores).replace_strict(severities, return_dtype=pl.String),
                 *(pl.Series(f"_detector:{name}", verdict.round_like_python(values[rows]), dtype=pl.Float64)
                   for name, values in self.by_detector.items())]
        frame = ranked.with_columns(heads).select(
            "_position", pl.col("_client_ip").cast(pl.String), "_rank", "_score", "_severity",
            pl.col("_requests").cast(pl.Int64), pl.col("_errors").cast(pl.Int64), "_first_seen", "_last_seen",
            *(f"_detector:{name}" for name in self.by_detector), *ip_features.FEATURE_NAMES)
        return frame, {int(positions[k]): found for k, found in self.reasons(rows).items()}
