"""The canonical events schema, and the Polars expressions that turn a format's captured
groups (see :mod:`log_formats`) into exactly that schema.

All work is column-wise; the few decodings that Polars has no kernel for (percent-encoding)
run once per distinct value, never once per line.
"""
from __future__ import annotations

from urllib.parse import unquote

import polars as pl

from log_formats import LogFormat

# The one canonical events schema. Every format produces exactly these columns, in this order.
# Repeated strings are dictionary-encoded (Categorical: 4 bytes a row) so that 5M events fit in
# well under 1 GB; cast to pl.String before using .str on them. The raw line is not kept: fetch
# example lines by (source, line_number) with log_input.read_lines.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us", "UTC"),   # the request time, normalised to UTC
    "tz_offset_min": pl.Int16(),             # the offset the server logged, minutes east of UTC
    "client_ip": pl.Categorical(),           # the real client (see --real-ip-header), else the peer
    "peer_ip": pl.Categorical(),             # the address that connected (a proxy, or the client)
    "method": pl.Categorical(),
    "path": pl.String(),
    "query": pl.String(),                    # without the leading '?'; null when absent
    "protocol": pl.Categorical(),
    "request": pl.String(),                  # the request line verbatim when it is not HTTP, else null
    "status": pl.Int16(),
    "bytes": pl.Int64(),
    "referer": pl.Categorical(),
    "user_agent": pl.Categorical(),
    "vhost": pl.Categorical(),
    "request_time": pl.Float64(),            # seconds; null when the format does not log it
    "line_number": pl.Int64(),               # 1-based, per source file
    "source": pl.Categorical(),
}
_CLF_TIME = "%d/%b/%Y:%H:%M:%S"
_REQUEST_LINE = r"^(?P<method>[A-Za-z][A-Za-z_-]{0,23}) (?P<target>\S+)(?: (?P<protocol>[A-Za-z]+/[0-9.]+))?$"
_ABSOLUTE = r"^[A-Za-z][A-Za-z0-9+.-]*://(?P<host>[^/?#\s]*)(?P<rest>.*)$"
_DASH_IS_NULL = ("referer", "user_agent", "vhost", "method", "protocol", "target", "path", "query_raw")
NO_TIME = pl.lit(None, dtype=pl.Datetime("us", "UTC"))


def _unquote_csv(expr: pl.Expr) -> pl.Expr:
    quoted = expr.str.starts_with('"') & expr.str.ends_with('"') & (expr.str.len_bytes() > 1)
    inner = expr.str.slice(1, expr.str.len_chars() - 2).str.replace_all('""', '"', literal=True)
    return pl.when(quoted).then(inner).otherwise(expr)


def _url_decode(values: pl.Series) -> pl.Series:
    """Percent-decoding, computed once per distinct value (user agents repeat heavily)."""
    distinct = values.unique().drop_nulls()
    return values.replace_strict(distinct, [unquote(v) for v in distinct.to_list()], default=None,
                                 return_dtype=pl.String)


def _decoded(fmt: LogFormat, name: str) -> pl.Expr:
    """A captured group with its format's escaping undone; '-' (not sent) becomes null."""
    decoder = dict(fmt.decoders).get(name)
    text = pl.col(name)
    if decoder == "csv":
        text = _unquote_csv(text)
    elif decoder == "url":
        text = text.map_batches(_url_decode, return_dtype=pl.String)
    elif decoder == "plus":
        text = text.str.replace_all("+", " ", literal=True)
    elif name in ("request", "referer", "user_agent", "hdr_x_forwarded_for"):
        text = text.str.replace_all(r'\\(["\\])', "$1")
    if name in _DASH_IS_NULL or name.startswith("hdr_"):
        text = pl.when((text == "-") | (text == "")).then(None).otherwise(text)
    return text


def _offset_minutes(text: pl.Expr) -> pl.Expr:
    """'+0100' / '-05:30' at the start of ``text`` in minutes east of UTC; null when absent."""
    sign = pl.when(text.str.slice(0, 1) == "-").then(-1).otherwise(1)
    digits = text.str.replace_all(":", "", literal=True)
    minutes = digits.str.slice(1, 2).cast(pl.Int32, strict=False) * 60 + digits.str.slice(3, 2).cast(
        pl.Int32, strict=False)
    return pl.when(text.str.contains(r"^[+-]\d\d:?\d\d$")).then(sign * minutes).otherwise(None)


def _localised(local: pl.Expr, offset: pl.Expr, tz: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(UTC time, offset minutes, no-offset flag) from a naive local time and its logged offset;
    without a logged offset the time is read in ``tz``."""
    known = (local - pl.duration(minutes=offset)).dt.replace_time_zone("UTC")
    assumed = local.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
    utc = pl.when(offset.is_not_null()).then(known).otherwise(assumed)
    derived = (local - assumed.dt.replace_time_zone(None)).dt.total_minutes()
    return utc, pl.coalesce(offset, derived), offset.is_null() & local.is_not_null()


def _clf_time(column: str, tz: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    # One fixed-width strptime plus slicing for the offset: about twice as fast as parsing '%z'.
    text = pl.col(column).str.strip_chars("[] ")
    local = text.str.slice(0, 20).str.strptime(pl.Datetime("us"), _CLF_TIME, strict=False)
    return _localised(local, _offset_minutes(text.str.slice(21)), tz)


def _iso_time(column: str, tz: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    text = pl.col(column).str.replace(r"Z$", "+00:00").str.replace(" ", "T", literal=True)
    local = text.str.slice(0, 19).str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S", strict=False)
    fraction = text.str.extract(r"^.{19}\.(\d{1,6})", 1).str.pad_end(6, "0").cast(pl.Int64, strict=False)
    local = local + pl.duration(microseconds=fraction.fill_null(0))
    return _localised(local, _offset_minutes(text.str.extract(r"([+-]\d\d:?\d\d)$", 1)), tz)


def _epoch_time(column: str) -> pl.Expr:
    seconds = pl.col(column).cast(pl.Float64, strict=False)
    return (seconds * 1e6).round().cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _any_time(tz: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """CSV and JSON timestamps: ISO 8601, CLF or Unix epoch seconds, whichever reads."""
    iso, iso_offset, iso_naive = _iso_time("time_any", tz)
    clf, clf_offset, clf_naive = _clf_time("time_any", tz)
    epoch = _epoch_time("time_any")
    utc = pl.coalesce(iso, clf, epoch)
    offset = pl.when(iso.is_not_null()).then(iso_offset).when(clf.is_not_null()).then(clf_offset).otherwise(0)
    naive = pl.when(iso.is_not_null()).then(iso_naive).when(clf.is_not_null()).then(clf_naive).otherwise(False)
    return utc, offset, naive


def timestamp(groups: set[str], tz: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(UTC timestamp, logged offset in minutes, 'logged without an offset' flag)."""
    if "time_clf" in groups:
        return _clf_time("time_clf", tz)
    if "time_iso" in groups:
        return _iso_time("time_iso", tz)
    if "time_any" in groups:
        return _any_time(tz)
    if "time_epoch" in groups:
        return _epoch_time("time_epoch"), pl.lit(0), pl.lit(False)
    if "time_w3c_date" in groups:  # W3C extended logs are in UTC by definition
        text = pl.col("time_w3c_date") + " " + pl.col("time_w3c_time").str.slice(0, 8)
        moment = text.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False)
        return moment.dt.replace_time_zone("UTC"), pl.lit(0), pl.lit(False)
    return NO_TIME, pl.lit(None, dtype=pl.Int16), pl.lit(False)



def request_time(groups: set[str]) -> pl.Expr:
    """Seconds the server spent, from whichever unit the format logs; negative (ELB's -1) is null."""
    def number(name: str) -> pl.Expr:
        return pl.col(name).cast(pl.Float64, strict=False)
    seconds = pl.lit(None, dtype=pl.Float64)
    if "request_time_us" in groups:
        seconds = number("request_time_us") / 1e6
    elif "request_time_ms" in groups:
        seconds = number("request_time_ms") / 1e3
    elif "request_time_s" in groups:
        seconds = number("request_time_s")
    elif "request_time_w3c" in groups:  # IIS logs whole milliseconds, CloudFront seconds with a dot
        w3c = pl.col("request_time_w3c")
        seconds = pl.when(w3c.str.contains(".", literal=True)).then(number("request_time_w3c")) \
            .otherwise(number("request_time_w3c") / 1e3)
    elif "request_time_tail" in groups:
        tail = pl.col("request_time_tail")
        seconds = pl.when(tail.str.contains(".", literal=True)).then(number("request_time_tail")) \
            .otherwise(number("request_time_tail") / 1e6)
    return pl.when(seconds >= 0).then(seconds).otherwise(None)


def address(column: str) -> pl.Expr:
    """An IP address as text: brackets dropped, lower case, IPv4-mapped IPv6 folded to IPv4."""
    ip = pl.col(column).str.strip_chars('[]" ').str.to_lowercase()
    return ip.str.replace(r"^::ffff:(\d+\.\d+\.\d+\.\d+)$", "$1")


def _request_parts(fmt: LogFormat, groups: set[str]) -> dict[str, pl.Expr]:
    """method, target, protocol and the verbatim request (kept only when it is not HTTP)."""
    if "request" not in groups:
        none = pl.lit(None, dtype=pl.String)
        return {"method": _decoded(fmt, "method") if "method" in groups else none,
                "target": _decoded(fmt, "target") if "target" in groups else none,
                "protocol": _decoded(fmt, "protocol") if "protocol" in groups else none, "request": none}
    request = _decoded(fmt, "request")
    parts = request.str.extract_groups(_REQUEST_LINE)
    return {"method": parts.struct.field("method"), "target": parts.struct.field("target"),
            "protocol": parts.struct.field("protocol"),
            "request": pl.when(parts.struct.field("method").is_null()).then(request).otherwise(None)}


def _path_query_host(fmt: LogFormat, groups: set[str], target: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    host = pl.lit(None, dtype=pl.String)
    if fmt.absolute_targets:  # load balancers and proxies log scheme://host:port/path
        absolute = target.str.extract_groups(_ABSOLUTE)
        host = absolute.struct.field("host").str.replace(r":\d+$", "")
        target = pl.coalesce(absolute.struct.field("rest").replace("", "/"), target)
    halves = target.str.splitn("?", 2)
    path = _decoded(fmt, "path") if "path" in groups else halves.struct.field("field_0")
    query = _decoded(fmt, "query_raw").str.strip_prefix("?") if "query_raw" in groups \
        else halves.struct.field("field_1")
    return path, pl.when(query == "").then(None).otherwise(query), host


def canonical(fmt: LogFormat, tz: str, source: str, real_ip_group: str | None = None) -> list[pl.Expr]:
    """Expressions turning the format's groups into EVENT_SCHEMA columns (plus ``_naive``: the
    time was logged without an offset, and ``_real_ip_hdr`` when ``real_ip_group`` is given)."""
    groups = set(fmt.groups)
    request = _request_parts(fmt, groups)
    path, query, host = _path_query_host(fmt, groups, request["target"])

    def opt(name: str, expr: pl.Expr | None = None) -> pl.Expr:
        return (expr if expr is not None else _decoded(fmt, name)) if name in groups else pl.lit(None)
    stamp, offset, naive = timestamp(groups, tz)
    columns = {
        "timestamp": stamp, "tz_offset_min": offset, "client_ip": address("client_ip"),
        "peer_ip": address("peer_ip" if "peer_ip" in groups else "client_ip"),
        "method": request["method"], "path": path, "query": query, "protocol": request["protocol"],
        "request": request["request"],
        "status": opt("status", _decoded(fmt, "status").cast(pl.Int16, strict=False)),
        "bytes": opt("bytes", _decoded(fmt, "bytes").cast(pl.Float64, strict=False).cast(pl.Int64).fill_null(0)),
        "referer": opt("referer"), "user_agent": opt("user_agent"),
        "vhost": pl.coalesce(opt("vhost"), host), "request_time": request_time(groups),
        "line_number": pl.col("line_number"), "source": pl.lit(source),
    }
    exprs = [expr.cast(EVENT_SCHEMA[name]).alias(name) for name, expr in columns.items()]
    exprs.append(naive.alias("_naive"))
    if real_ip_group:
        exprs.append((_decoded(fmt, real_ip_group) if real_ip_group in groups else pl.lit(None, pl.String))
                     .alias("_real_ip_hdr"))
    return exprs
