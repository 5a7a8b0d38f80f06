"""The ModSecurity variables of each distinct request of an access log, as one long table.

``requests(events)`` keeps one row per distinct (method, path, query, protocol, user agent,
referer, host, logged forwarded-for headers), ``rows_of`` finds the event rows of some of them
again; ``long_table`` gives every variable value of those requests as (rid, variable, key, value)
rows, which the rules then select from.
"""
from __future__ import annotations

import polars as pl

from log_analyser_core.parsing.events import HEADER_COLUMNS, per_distinct
from log_analyser_core.rules.crs import transforms

# The request headers a log may hold, as REQUEST_HEADERS:<name>: column -> header name.
HEADERS = {"user_agent": "User-Agent", "referer": "Referer", "vhost": "Host",
           **{column: header for column, (_, header) in HEADER_COLUMNS.items()}}
REQUEST_KEYS = ("method", "path", "query", "protocol", *HEADERS)
LONG_SCHEMA = {"rid": pl.UInt32, "variable": pl.String, "key": pl.String, "value": pl.String}


def request_columns(events: pl.DataFrame) -> pl.DataFrame:
    """``events``' REQUEST_KEYS columns; a header column a caller's table lacks is null (events
    built by hand, or before the header columns existed)."""
    return events.select(pl.col(k) if k in events.columns else pl.lit(None, pl.String).alias(k) for k in REQUEST_KEYS)


def requests(events: pl.DataFrame) -> pl.DataFrame:
    """Distinct requests of ``events``: ``rid`` (0..n-1) and the REQUEST_KEYS as strings."""
    coded = [c for c in REQUEST_KEYS if events.schema[c] == pl.Categorical]
    frame = events.lazy().select(REQUEST_KEYS).unique()
    frame = frame.with_columns(pl.col(c).cast(pl.String) for c in coded)
    return frame.collect().with_row_index("rid")


def rows_of(events: pl.DataFrame, reqs: pl.DataFrame, offset: int = 0) -> pl.DataFrame:
    """(``_row``, rid): the rows of ``events`` (counted from ``offset``) that sent each of ``reqs``,
    a few requests out of many: only rows with one of their paths are compared in full."""
    paths = reqs["path"].unique().implode()
    frame = events.lazy().with_row_index("_row", offset=offset).filter(pl.col("path").is_in(paths))
    frame = frame.with_columns(pl.col(c).cast(pl.String) for c in REQUEST_KEYS if events.schema[c] == pl.Categorical)
    return frame.join(reqs.lazy().select("rid", *REQUEST_KEYS), on=list(REQUEST_KEYS), nulls_equal=True).select(
        "_row", "rid").collect()


def _url_decode(values: pl.Series) -> pl.Series:
    return pl.Series([transforms.url_decode_uni(v) for v in values.to_list()], dtype=pl.String)


def _decoded(expr: pl.Expr) -> pl.Expr:
    """Argument names and values as ModSecurity parses them: percent escapes and '+' decoded."""
    return pl.when(expr.str.contains("[%+]")).then(
        expr.map_batches(per_distinct(_url_decode), return_dtype=pl.String, is_elementwise=True)).otherwise(expr)


def long_table(reqs: pl.DataFrame) -> pl.DataFrame:
    """Every variable value: (rid, variable, key, value). ``key`` is the argument or header name
    (null for single-valued variables). ARGS and ARGS_GET are the same rows, stored once as ARGS."""
    r = reqs.lazy()
    uri = pl.when(pl.col("query").is_not_null()).then(pl.col("path") + "?" + pl.col("query")).otherwise(pl.col("path"))
    path = pl.col("path").fill_null("")
    line = pl.concat_str([pl.col("method"), pl.lit(" "), uri, pl.when(pl.col("protocol").is_not_null())
                          .then(" " + pl.col("protocol")).otherwise(pl.lit(""))])
    single = {
        "REQUEST_LINE": line, "REQUEST_METHOD": pl.col("method"), "REQUEST_PROTOCOL": pl.col("protocol"),
        "REQUEST_URI": uri, "REQUEST_URI_RAW": uri, "REQUEST_FILENAME": _decoded(path),
        "REQUEST_BASENAME": _decoded(path).str.extract(r"([^/]*)$", 1), "QUERY_STRING": pl.col("query").fill_null(""),
    }
    parts = [r.select("rid", pl.lit(name).alias("variable"), pl.lit(None, pl.String).alias("key"),
                      expr.cast(pl.String).alias("value")) for name, expr in single.items()]
    for column, header in HEADERS.items():
        parts.append(r.filter(pl.col(column).is_not_null()).select(
            "rid", pl.lit("REQUEST_HEADERS").alias("variable"), pl.lit(header).alias("key"),
            pl.col(column).alias("value")))
    pairs = (r.filter(pl.col("query").is_not_null() & (pl.col("query") != ""))
             .select("rid", pl.col("query").str.split("&").alias("pair")).explode("pair")
             .filter(pl.col("pair") != "")
             .select("rid", pl.col("pair").str.splitn("=", 2).struct.rename_fields(["name", "value"]))
             .unnest("pair")
             .select("rid", _decoded(pl.col("name")).alias("name"),
                     _decoded(pl.col("value").fill_null("")).alias("value")))
    parts.append(pairs.select("rid", pl.lit("ARGS").alias("variable"), pl.col("name").alias("key"), "value"))
    parts.append(pairs.select("rid", pl.lit("ARGS_NAMES").alias("variable"), pl.col("name").alias("key"),
                              pl.col("name").alias("value")))
    long = pl.concat(parts).filter(pl.col("value").is_not_null())
    return long.with_columns(pl.col("rid").cast(pl.UInt32)).collect()


# ModSecurity's aliases: ARGS_GET is ARGS (a log has no body arguments).
ALIASES = {"ARGS_GET": "ARGS", "ARGS_GET_NAMES": "ARGS_NAMES"}
