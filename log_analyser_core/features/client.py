"""Per-client behaviour features: a registry of small Polars expressions, computed in one group_by.

Each feature has a name, a unit, a description, the scale below which a deviation is not
meaningful (``floor``, used for robust z-scores) and a sentence template for reasons.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

STATIC_EXTENSIONS = r"(?i)\.(?:css|js|mjs|png|jpe?g|gif|svg|ico|webp|avif|woff2?|ttf|eot|otf|map|mp4|webm|mp3)$"
SENSITIVE_PATHS = (r"(?i)(?:/\.env|/\.git|/\.svn|/\.hg|/\.aws|/\.ssh|/\.htaccess|/\.htpasswd|/\.ds_store|"
                   r"wp-login|wp-admin|xmlrpc\.php|wp-config|phpmyadmin|/pma/|/myadmin|/admin|/administrator|"
                   r"/login|/signin|/user/login|/manager/html|/cgi-bin/|/server-status|/actuator|/config\.|"
                   r"\.bak$|\.sql$|\.old$|\.swp$|/backup|/setup\.php|/install\.php|/shell|/cmd|/console)")
COMMON_METHODS = ("GET", "POST", "HEAD")
SPECIAL_CHARS = r"""['"<>;(){}|`$\\]|%(?:27|22|3c|3e|3b|28|29|7b|7d|7c|60|24|5c|00|2e%2e|2f)|\.\./"""
NIGHT_HOURS = (0, 6)  # [start, end) in the server's local time


@dataclass(frozen=True)
class Feature:
    """One per-client feature. ``expr`` builds the aggregation over a client's events."""

    name: str
    unit: str
    description: str
    expr: Callable[[], pl.Expr]
    reason: str           # str.format template: v = value, t = typical value, r = the client's row
    floor: float = 1.0    # smallest spread used when scoring a deviation, in the feature's unit
    heavy_tailed: bool = False  # counts, sizes and rates: compared on a log scale by detectors
    # the value for every client with one request, where it is the same for all of them: such a
    # feature is aggregated over the clients with more (its per-client sort or count costs seconds
    # over a million one-request clients); a test checks the value against the aggregation
    one_request: float | None = None
    # the same value in two steps, per-client aggregations (named columns) and then an expression over
    # those columns: Polars does not share a sub-expression between the parts of one aggregation
    staged: tuple[Callable[[], list[pl.Expr]], Callable[[], pl.Expr]] | None = None


def _ratio(condition: pl.Expr) -> pl.Expr:
    return condition.mean()  # a Boolean mean: no per-row float column is materialised


def _gaps() -> pl.Expr:
    return pl.col("timestamp").sort().diff().dt.total_microseconds().cast(pl.Float64) / 1e6


def _active_seconds() -> pl.Expr:
    return (pl.col("timestamp").max() - pl.col("timestamp").min()).dt.total_microseconds() / 1e6


def _burstiness() -> pl.Expr:
    """Goh-Barabasi burstiness of inter-request gaps: -1 periodic, 0 random, 1 bursty."""
    return _burstiness_of(_gaps().mean(), _gaps().std())


def _burstiness_of(mean: pl.Expr, std: pl.Expr) -> pl.Expr:
    return pl.when((mean + std) > 0).then((std - mean) / (std + mean)).otherwise(0.0).fill_null(0.0)


def _gap_moments() -> list[pl.Expr]:
    """The gaps' mean and standard deviation, each computed once (``_burstiness`` reads each three times)."""
    return [_gaps().mean().alias("_gap_mean"), _gaps().std().alias("_gap_std")]


def _status_count(code: int) -> pl.Expr:
    return (pl.col("status") == code).sum()


FEATURES: tuple[Feature, ...] = (
    Feature("requests", "requests", "Requests made by the client", lambda: pl.len(),
            "{v:.0f} requests (typical {t:.0f})", heavy_tailed=True),
    Feature("request_rate", "requests/min", "Mean requests per minute over the active period (at least 1 min)",
            lambda: pl.len() / (_active_seconds().clip(lower_bound=60.0) / 60.0),
            "{v:.1f} requests per minute on average (typical {t:.1f})", floor=0.5, heavy_tailed=True),
    Feature("peak_rpm", "requests/min", "Most requests in any one clock minute",
            lambda: pl.col("timestamp").dt.truncate("1m").unique_counts().max(),
            "peaks at {v:.0f} requests in one minute (typical {t:.0f})", floor=2.0, heavy_tailed=True,
            one_request=1.0),
    Feature("burstiness", "-1..1", "Burstiness of the gaps between requests (-1 periodic, 1 bursty)",
            _burstiness, "request timing burstiness {v:.2f} (typical {t:.2f})", floor=0.2, one_request=0.0,
            staged=(_gap_moments, lambda: _burstiness_of(pl.col("_gap_mean"), pl.col("_gap_std")))),
    Feature("active_seconds", "s", "Seconds between first and last request", _active_seconds,
            "active for {v:.0f} s (typical {t:.0f} s)", floor=60.0, heavy_tailed=True),
    Feature("error_4xx_ratio", "ratio", "Share of requests answered 4xx",
            lambda: _ratio(pl.col("status").is_between(400, 499)),
            "{v:.0%} of {r[requests]:.0f} requests returned 4xx (typical {t:.0%})", floor=0.05),
    Feature("error_5xx_ratio", "ratio", "Share of requests answered 5xx",
            lambda: _ratio(pl.col("status").is_between(500, 599)),
            "{v:.0%} of {r[requests]:.0f} requests returned 5xx (typical {t:.0%})", floor=0.05),
    Feature("status_401", "requests", "Requests answered 401 Unauthorized", lambda: _status_count(401),
            "{v:.0f} requests refused with 401 (typical {t:.0f})", heavy_tailed=True),
    Feature("status_403", "requests", "Requests answered 403 Forbidden", lambda: _status_count(403),
            "{v:.0f} requests refused with 403 (typical {t:.0f})", heavy_tailed=True),
    Feature("status_404", "requests", "Requests answered 404 Not Found", lambda: _status_count(404),
            "{v:.0f} requests for missing pages (404; typical {t:.0f})", heavy_tailed=True),
    Feature("distinct_paths", "paths", "Distinct paths requested", lambda: pl.col("_path_id").n_unique(),
            "{v:.0f} distinct paths (typical {t:.0f})", heavy_tailed=True),
    Feature("distinct_404_paths", "paths", "Distinct paths that returned 404",
            lambda: pl.col("_path_id").filter(pl.col("status") == 404).n_unique(),
            "{v:.0f} distinct paths returned 404 (typical {t:.0f})", heavy_tailed=True),
    Feature("path_entropy", "bits", "Shannon entropy of the client's path distribution",
            lambda: pl.col("_path_id").unique_counts().entropy(base=2).fill_null(0.0),
            "path entropy {v:.1f} bits (typical {t:.1f})", floor=0.5, one_request=0.0),
    Feature("static_ratio", "ratio", "Share of requests for static assets (css, js, images, fonts)",
            lambda: _ratio(pl.col("path").str.contains(STATIC_EXTENSIONS).fill_null(False)),
            "{v:.0%} of requests were for static assets (typical {t:.0%})", floor=0.1),
    Feature("distinct_user_agents", "agents", "Distinct User-Agent strings",
            lambda: pl.col("user_agent").n_unique(), "{v:.0f} different user agents (typical {t:.0f})",
            heavy_tailed=True),
    Feature("post_ratio", "ratio", "Share of POST requests", lambda: _ratio(pl.col("method") == "POST"),
            "{v:.0%} of requests were POST (typical {t:.0%})", floor=0.05),
    Feature("unusual_method_ratio", "ratio", "Share of requests with a method other than GET/POST/HEAD",
            lambda: _ratio(~pl.col("method").is_in(COMMON_METHODS).fill_null(False)),
            "{v:.0%} of requests used unusual or missing methods (typical {t:.0%})", floor=0.02),
    Feature("bytes_total", "bytes", "Response bytes sent to the client", lambda: pl.col("bytes").sum(),
            "{v:,.0f} bytes downloaded (typical {t:,.0f})", floor=1024.0, heavy_tailed=True),
    Feature("bytes_max", "bytes", "Largest single response", lambda: pl.col("bytes").max(),
            "largest response {v:,.0f} bytes (typical {t:,.0f})", floor=1024.0, heavy_tailed=True),
    Feature("request_time_mean", "s", "Mean server time per request (when logged)",
            lambda: pl.col("request_time").mean(), "mean request time {v:.3f} s (typical {t:.3f} s)",
            floor=0.05, heavy_tailed=True),
    Feature("request_time_max", "s", "Slowest request (when logged)", lambda: pl.col("request_time").max(),
            "slowest request {v:.3f} s (typical {t:.3f} s)", floor=0.1, heavy_tailed=True),
    Feature("night_ratio", "ratio", "Share of requests between 00:00 and 06:00 server-local time",
            lambda: _ratio((pl.col("timestamp") + pl.duration(minutes=pl.col("tz_offset_min").fill_null(0)))
                           .dt.hour().is_between(NIGHT_HOURS[0], NIGHT_HOURS[1] - 1)),
            "{v:.0%} of requests at night, server time (typical {t:.0%})", floor=0.1),
    Feature("sensitive_ratio", "ratio", "Share of requests to admin, login and secret-file paths",
            lambda: _ratio(pl.col("path").str.contains(SENSITIVE_PATHS).fill_null(False)),
            "{v:.0%} of requests probed admin, login or secret files (typical {t:.0%})", floor=0.05),
    Feature("query_length_mean", "chars", "Mean query-string length",
            lambda: pl.col("query").str.len_chars().fill_null(0).mean(),
            "query strings {v:.0f} characters long on average (typical {t:.0f})", floor=10.0, heavy_tailed=True),
    Feature("special_char_density", "chars/char",
            "Quotes, brackets, ';', '|', '../' and their encodings per URL character",
            lambda: (pl.col("_special_chars").sum() / pl.col("_target_chars").sum().clip(lower_bound=1)),
            "{v:.1%} of URL characters are injection-style specials (typical {t:.1%})", floor=0.01),
)
FEATURE_NAMES = tuple(feature.name for feature in FEATURES)
BY_NAME = {feature.name: feature for feature in FEATURES}


def _row_helpers() -> list[pl.Expr]:
    """Per-row numbers that features aggregate, so that no string column is gathered per client
    (that gather cost ~130 bytes a row at 5M events): a 64-bit path hash standing in for the
    path in distinct counts and entropy, and the special-character counts of path + '?' + query
    (no pattern contains '?', so counting the two parts apart gives the same numbers)."""
    def specials(name: str) -> pl.Expr:
        return pl.col(name).str.count_matches(SPECIAL_CHARS, literal=False).fill_null(0)
    return [
        pl.col("path").hash(seed=0).alias("_path_id"),
        (specials("path") + specials("query")).alias("_special_chars"),
        (pl.col("path").str.len_chars().fill_null(0) + pl.col("query").str.len_chars().fill_null(0) + 1)
        .alias("_target_chars"),
    ]


AGGREGATION_BATCHES = 3  # features computed in this many passes: bounds the per-row temporaries in memory


def compute(events: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """One row per client_ip: the registry's features plus first_seen, last_seen and errors.

    Rows are sorted by client_ip so the output is deterministic. The aggregations run in a few
    passes over the events rather than one, which keeps peak memory well under the size of the
    events table on large logs (each pass is cheap: grouping on a dictionary-encoded key).
    """
    lazy = events.lazy().with_columns(_row_helpers())
    names = [*FEATURE_NAMES, "first_seen", "last_seen", "errors"]
    aggregated = [feature for feature in FEATURES if feature.one_request is None]
    aggregations = _aggregations(aggregated)
    aggregations += [
        pl.col("timestamp").min().alias("first_seen"), pl.col("timestamp").max().alias("last_seen"),
        (pl.col("status") >= 400).sum().cast(pl.Int64).alias("errors"),
    ]
    size = -(-len(aggregations) // AGGREGATION_BATCHES)
    parts = [lazy.group_by("client_ip").agg(aggregations[i:i + size]).collect()
             .sort("client_ip") for i in range(0, len(aggregations), size)]
    table = pl.concat(parts, how="horizontal") if len(parts) == 1 else parts[0].hstack(
        [column for part in parts[1:] for column in part.drop("client_ip").get_columns()])
    return _with_one_request_features(_finished(table, aggregated), lazy).select("client_ip", *names)


def _with_one_request_features(table: pl.DataFrame, events: pl.LazyFrame) -> pl.DataFrame:
    """``table`` with the features that have a ``one_request`` value: that value for the clients
    with one request, the aggregation over the others."""
    features = [feature for feature in FEATURES if feature.one_request is not None]
    several = (events.filter(pl.len().over("client_ip") > 1).group_by("client_ip")
               .agg(pl.lit(True).alias("_several"), *_aggregations(features)).collect())
    several = _finished(several, features)
    joined = table.join(several, on="client_ip", how="left", maintain_order="left")
    return joined.with_columns(pl.when(pl.col("_several")).then(pl.col(feature.name))
                               .otherwise(pl.lit(feature.one_request, dtype=pl.Float64)).alias(feature.name)
                               for feature in features).drop("_several")


def _aggregations(features: list[Feature]) -> list[pl.Expr]:
    """The features' aggregations, each as its column or, for a ``staged`` one, its parts."""
    aggregations = []
    for feature in features:
        if feature.staged:
            aggregations += feature.staged[0]()
        else:
            aggregations.append(feature.expr().cast(pl.Float64).alias(feature.name))
    return aggregations


def _finished(table: pl.DataFrame, features: list[Feature]) -> pl.DataFrame:
    """``table`` of ``_aggregations(features)`` with each ``staged`` feature computed from its parts."""
    parts, combined = [], []
    for feature in features:
        if feature.staged:
            parts += [part.meta.output_name() for part in feature.staged[0]()]
            combined.append(feature.staged[1]().cast(pl.Float64).alias(feature.name))
    return table.with_columns(combined).drop(parts) if combined else table


def logged_features(table: pl.DataFrame) -> list[str]:
    """Features with data in this run: ones the log format does not record are all null."""
    return [name for name in FEATURE_NAMES if table.height and table[name].null_count() < table.height]
