"""The canonical events schema, and the Polars expressions that turn a format's captured
groups (see :mod:`log_formats`) into exactly that schema.

All work is column-wise; the few decodings that Polars has no kernel for (percent-encoding)
run once per distinct value, never once per line.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from urllib.parse import unquote

import polars as pl

from log_analyser_core.parsing.address import canonical_all
from log_analyser_core.parsing.formats import LogFormat

# The one canonical events schema. Every format produces exactly these columns, in this order.
# Repeated strings are dictionary-encoded (Categorical: 4 bytes a row) so that 5M events fit in
# well under 1 GB; cast to pl.String before using .str on them. The raw line is not kept: fetch
# example lines by (source, line_number) with log_reader.read_lines.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us", "UTC"),   # the request time, normalised to UTC
    "tz_offset_min": pl.Int16(),             # the offset the server logged, minutes east of UTC
    "client_ip": pl.Categorical(),           # the real client (see --real-ip-header), else the peer
    "peer_ip": pl.Categorical(),             # the address that connected (a proxy, or the client)
    "method": pl.Categorical(),
    "path": pl.String(),
    "query": pl.String(),                    # without the leading '?'; null when absent
    "protocol": pl.Categorical(),
    "request": pl.Categorical(),             # the request line verbatim when it is not HTTP, else null
    "status": pl.Int16(),
    "bytes": pl.Int64(),
    "referer": pl.Categorical(),
    "user_agent": pl.Categorical(),
    "vhost": pl.Categorical(),
    "forwarded_for": pl.Categorical(),       # X-Forwarded-For as logged (attacker-written); null when not logged
    "x_real_ip": pl.Categorical(),           # X-Real-IP as logged
    "cf_connecting_ip": pl.Categorical(),    # CF-Connecting-IP as logged
    "request_time": pl.Float64(),            # seconds; null when the format does not log it
    "line_number": pl.Int64(),               # 1-based, per source file
    "source": pl.Categorical(),
}
# Logged request headers kept verbatim beside the fields above: event column -> (format group,
# header name). Payload rules read them (CRS as REQUEST_HEADERS); the client address that
# --real-ip-header takes from one of them is resolved and validated apart (sources.resolve_real_ip).
HEADER_COLUMNS: dict[str, tuple[str, str]] = {
    "forwarded_for": ("hdr_x_forwarded_for", "X-Forwarded-For"),
    "x_real_ip": ("hdr_x_real_ip", "X-Real-IP"),
    "cf_connecting_ip": ("hdr_cf_connecting_ip", "CF-Connecting-IP"),
}
_CLF_TIME = "%d/%b/%Y:%H:%M:%S"
_REQUEST_LINE = r"^(?P<method>[A-Za-z][A-Za-z_-]{0,23}) (?P<target>\S+)(?: (?P<protocol>[A-Za-z]+/[0-9.]+))?$"
_ABSOLUTE = r"^[A-Za-z][A-Za-z0-9+.-]*://(?P<host>[^/?#\s]*)(?P<rest>.*)$"
_DASH_IS_NULL = ("referer", "user_agent", "vhost", "method", "protocol", "target", "path", "query_raw")


def _unquote_csv(expr: pl.Expr) -> pl.Expr:
    quoted = expr.str.starts_with('"') & expr.str.ends_with('"') & (expr.str.len_bytes() > 1)
    inner = expr.str.slice(1, expr.str.len_chars() - 2).str.replace_all('""', '"', literal=True)
    return pl.when(quoted).then(inner).otherwise(expr)


def per_distinct(transform: Callable[[pl.Series], pl.Series],
                 dtype: type[pl.DataType] | pl.DataType = pl.String) -> Callable[[pl.Series], pl.Series]:
    """Apply a column transform once per distinct value (addresses, user agents, referers and
    time-zone offsets repeat heavily, so this does a fraction of the work) and map the results
    back; when the transform changes nothing, the column is returned as it is."""
    def apply(values: pl.Series) -> pl.Series:
        distinct = values.unique().drop_nulls()
        mapped = transform(distinct)
        if mapped.dtype == values.dtype and mapped.dtype == dtype:
            changed = (mapped != distinct).fill_null(True)
            if not changed.any():
                return values
            if changed.sum() * 4 < len(changed):   # a few values changed: only those are looked up
                return values.replace(distinct.filter(changed), mapped.filter(changed))
        return values.replace_strict(distinct, mapped, default=None, return_dtype=dtype)
    return apply


JOIN_FROM_PATTERNS = 3   # matching patterns mapped back by one join, not one pass over the rows each


def text_masks(values: pl.Series, patterns: Mapping[str, str],
               transform: Callable[[pl.Series], pl.Series] | None = None) -> dict[str, pl.Series]:
    """Boolean masks over ``values`` (a String or Categorical column), one per named regular
    expression, each matched on the text of the distinct values only (null as the empty string;
    ``transform``, such as URL-decoding, applied to that text once) and mapped back to every row. A
    log repeats its user agents, referers and paths many times over, so this matches a fraction of
    the rows, and a categorical column is never cast to text as a whole. A pattern that matches no
    value costs no pass over the rows; when several match, one join maps them all back."""
    distinct = values.unique()
    text = distinct.cast(pl.String).fill_null("")
    text = transform(text) if transform is not None else text
    found = {name: text.str.contains(pattern).fill_null(False) for name, pattern in patterns.items()}
    hit = [name for name, matched in found.items() if matched.any()]
    masks = {name: pl.repeat(False, values.len(), dtype=pl.Boolean, eager=True).alias(values.name)
             for name in patterns if name not in hit}
    if len(hit) >= JOIN_FROM_PATTERNS:
        table = pl.DataFrame([distinct.alias("_value"), *(found[name].alias(f"_{i}") for i, name in enumerate(hit))])
        joined = values.alias("_value").to_frame().join(table, on="_value", how="left", maintain_order="left",
                                                         nulls_equal=True)
        masks |= {name: joined[f"_{i}"].alias(values.name) for i, name in enumerate(hit)}
    else:
        for name in hit:
            matched = distinct.filter(found[name])
            mask = values.is_in(matched.drop_nulls().implode()).fill_null(False)
            masks[name] = mask | values.is_null() if matched.null_count() else mask
    return {name: masks[name] for name in patterns}


def text_matches(values: pl.Series, pattern: str) -> pl.Series:
    """``text_masks`` for one regular expression."""
    return text_masks(values, {"": pattern})[""]


def _url_unquote(values: pl.Series) -> pl.Series:
    return pl.Series([unquote(v) for v in values.to_list()], dtype=pl.String)


def _unescape(values: pl.Series) -> pl.Series:
    return values.str.replace_all(r'\\(["\\])', "$1")


def _if_escaped(transform: Callable[[pl.Series], pl.Series]) -> Callable[[pl.Series], pl.Series]:
    """``transform`` for a batch that holds a backslash; most batches hold none and are returned as
    they are (a literal search is far cheaper than the regex, let alone finding distinct values)."""
    def apply(values: pl.Series) -> pl.Series:
        return transform(values) if values.str.contains("\\", literal=True).any() else values
    return apply


def _python_decoder(fmt: LogFormat, name: str) -> Callable[[pl.Series], pl.Series] | None:
    """The column transform in Python that undoes a group's escaping, or None when Polars' own
    kernels do (or there is nothing to undo)."""
    decoder = dict(fmt.decoders).get(name)
    if decoder == "url":
        return per_distinct(_url_unquote)
    if decoder in ("csv", "plus"):
        return None
    if name in ("referer", "user_agent"):
        return _if_escaped(per_distinct(_unescape))
    if name in ("request", "hdr_x_forwarded_for"):
        return _if_escaped(_unescape)
    return None


def _decoded(fmt: LogFormat, name: str, done: Set[str] = frozenset()) -> pl.Expr:
    """A captured group with its format's escaping undone; '-' (not sent) becomes null. The groups in
    ``done`` hold text whose Python decoding (``_python_decoder``) was already applied."""
    decoder = dict(fmt.decoders).get(name)
    python = None if name in done else _python_decoder(fmt, name)
    text = pl.col(name)
    if decoder == "csv":
        text = _unquote_csv(text)
    elif decoder == "plus":
        text = text.str.replace_all("+", " ", literal=True)
    elif python is not None:
        text = text.map_batches(python, return_dtype=pl.String, is_elementwise=True)
    if name in _DASH_IS_NULL or name.startswith("hdr_"):
        text = pl.when((text == "-") | (text == "")).then(None).otherwise(text)
    return text


def _offset_series(text: pl.Series) -> pl.Series:
    """'+0100' or '-05:30' in minutes east of UTC; null when absent."""
    return text.to_frame("t").select(_offset_expr(pl.col("t"))).to_series()


def _offset_expr(text: pl.Expr) -> pl.Expr:
    digits = text.str.replace(":", "", literal=True)
    sign = digits.str.slice(0, 1)
    minutes = digits.str.slice(1, 2).cast(pl.Int32, strict=False) * 60 + digits.str.slice(3, 2).cast(
        pl.Int32, strict=False)
    valid = sign.is_in(["+", "-"]) & (digits.str.len_bytes() == 5)
    return pl.when(valid).then(pl.when(sign == "-").then(-minutes).otherwise(minutes)).otherwise(None)


def _offset_minutes(text: pl.Expr) -> pl.Expr:
    """Offsets in minutes, computed once per distinct offset text (a log has a handful)."""
    return text.map_batches(per_distinct(_offset_series, pl.Int32), return_dtype=pl.Int32, is_elementwise=True)


def _clf_time(column: str) -> tuple[pl.Expr, pl.Expr]:
    """(naive local time, logged offset) from '[10/Oct/2000:13:55:36 -0700]' (brackets optional)."""
    text = pl.col(column).str.strip_chars("[] ")
    local = text.str.slice(0, 20).str.strptime(pl.Datetime("us"), _CLF_TIME, strict=False)
    return local, _offset_minutes(text.str.slice(21))


def _iso_time(column: str) -> tuple[pl.Expr, pl.Expr]:
    """(naive local time, logged offset) from ISO 8601 with optional fraction, 'Z' or offset."""
    text = pl.col(column).str.replace(r"Z$", "+00:00").str.replace(" ", "T", literal=True)
    local = text.str.slice(0, 19).str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S", strict=False)
    fraction = text.str.extract(r"^.{19}\.(\d{1,6})", 1).str.pad_end(6, "0").cast(pl.Int64, strict=False)
    local = local + pl.duration(microseconds=fraction.fill_null(0))
    return local, _offset_minutes(text.str.extract(r"([+-]\d\d:?\d\d)$", 1))


def _epoch_time(column: str) -> tuple[pl.Expr, pl.Expr]:
    """Unix epoch time in seconds, or in ms, us or ns (Cloudflare's unixnano), told apart by size."""
    number = pl.col(column).cast(pl.Float64, strict=False)
    seconds = (pl.when(number > 1e17).then(number / 1e9).when(number > 1e14).then(number / 1e6)
               .when(number > 1e11).then(number / 1e3).otherwise(number))
    seconds = pl.when(seconds.abs() < 1e11).then(seconds)   # beyond year 5000: unreadable, not an error
    micros = (seconds * 1e6).round().cast(pl.Int64, strict=False)   # never a crash on an odd value
    return micros.cast(pl.Datetime("us")), pl.lit(0, dtype=pl.Int32)


def _any_time(column: str) -> tuple[pl.Expr, pl.Expr]:
    """CSV and JSON timestamps: ISO 8601, CLF or Unix epoch seconds, whichever reads."""
    readings = [_iso_time(column), _clf_time(column), _epoch_time(column)]
    local = pl.coalesce([reading for reading, _ in readings])
    offset = pl.when(readings[0][0].is_not_null()).then(readings[0][1]) \
        .when(readings[1][0].is_not_null()).then(readings[1][1]).otherwise(0)
    return local, offset


def local_time(groups: set[str]) -> tuple[pl.Expr, pl.Expr]:
    """(naive time as logged, logged offset in minutes or null); W3C and epoch times are UTC."""
    if "time_clf" in groups:
        return _clf_time("time_clf")
    if "time_iso" in groups:
        return _iso_time("time_iso")
    if "time_any" in groups:
        return _any_time("time_any")
    if "time_epoch" in groups:
        return _epoch_time("time_epoch")
    if "time_w3c_date" in groups:
        text = pl.col("time_w3c_date") + " " + pl.col("time_w3c_time").str.slice(0, 8)
        return text.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False), pl.lit(0, pl.Int32)
    return pl.lit(None, dtype=pl.Datetime("us")), pl.lit(None, dtype=pl.Int32)


def utc_time(tz: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(UTC time, offset minutes, 'logged without an offset') from the ``_local`` and ``_offset``
    columns; a time without a logged offset is read in ``tz``."""
    local, offset = pl.col("_local"), pl.col("_offset")
    known = (local - pl.duration(minutes=offset)).dt.replace_time_zone("UTC")
    assumed = local.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
    utc = pl.when(offset.is_not_null()).then(known).otherwise(assumed)
    derived = (local - assumed.dt.replace_time_zone(None)).dt.total_minutes()
    return utc, pl.coalesce(offset, derived), offset.is_null() & local.is_not_null()


def request_time(groups: set[str]) -> pl.Expr:
    """Seconds the server spent, from whichever unit the format logs; negative (ELB's -1) is null."""
    def number(name: str) -> pl.Expr:   # Google's latency is '0.123s'
        return pl.col(name).cast(pl.String).str.strip_suffix("s").cast(pl.Float64, strict=False)
    seconds = pl.lit(None, dtype=pl.Float64)
    if "request_time_ns" in groups:
        seconds = number("request_time_ns") / 1e9
    elif "request_time_us" in groups:
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


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"^{_OCTET}(?:\.{_OCTET}){{3}}$"
_WITH_PORT = r"^(\d+\.\d+\.\d+\.\d+):\d{1,5}$|^\[([^\]]*)\]:\d{1,5}$"


def _normal_address(values: pl.Series) -> pl.Series:
    """Canonical address text (see parsing.address), or null for anything that is not an address.
    A port after the address (``192.0.2.1:5678``, ``[2001:db8::1]:443``) is dropped. Plain IPv4
    is checked by one regex over the column; only the rest goes through ``ipaddress``."""
    ip = values.str.strip_chars('" ')
    ported = ip.str.extract_groups(_WITH_PORT)
    ip = ported.struct.field("1").fill_null(ported.struct.field("2")).fill_null(ip.str.strip_chars("[]"))
    ipv4 = ip.str.contains(_IPV4)
    if bool(ipv4.all()):
        return ip
    others = ip.filter(~ipv4)
    checked = pl.Series(canonical_all(others.to_list()), dtype=pl.String)
    return ip.scatter((~ipv4).arg_true(), checked)


def address(column: str) -> pl.Expr:
    """An IP address as canonical text (port and brackets dropped, lower case, IPv6 compressed,
    IPv4-mapped IPv6 folded to IPv4); null when the text is not an address."""
    return pl.col(column).map_batches(per_distinct(_normal_address), return_dtype=pl.String, is_elementwise=True)


def _request_parts(fmt: LogFormat, groups: set[str], done: Set[str] = frozenset()) -> dict[str, pl.Expr]:
    """method, target, protocol and the verbatim request (kept only when it is not HTTP), from
    the ``_request`` and ``_parts`` columns of the earlier stages."""
    if "request" not in groups:
        none = pl.lit(None, dtype=pl.String)
        return {"method": _decoded(fmt, "method", done) if "method" in groups else none,
                "target": _decoded(fmt, "target", done) if "target" in groups else none,
                "protocol": _decoded(fmt, "protocol", done) if "protocol" in groups else none, "request": none}
    parts = pl.col("_parts")
    return {"method": parts.struct.field("method"), "target": parts.struct.field("target"),
            "protocol": parts.struct.field("protocol"),
            "request": pl.when(parts.struct.field("method").is_null()).then(pl.col("_request")).otherwise(None)}


def _path_query_host(fmt: LogFormat, groups: set[str], target: pl.Expr,
                     done: Set[str] = frozenset()) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    host = pl.lit(None, dtype=pl.String)
    if fmt.absolute_targets:  # load balancers and proxies log scheme://host:port/path
        absolute = target.str.extract_groups(_ABSOLUTE)
        host = absolute.struct.field("host").str.replace(r":\d+$", "")
        target = pl.coalesce(absolute.struct.field("rest").replace("", "/"), target)
    halves = target.str.splitn("?", 2)
    path = _decoded(fmt, "path", done) if "path" in groups else halves.struct.field("field_0")
    query = _decoded(fmt, "query_raw", done).str.strip_prefix("?") if "query_raw" in groups \
        else halves.struct.field("field_1")
    return path, pl.when(query == "").then(None).otherwise(query), host


FIELD_CHARS = 8192   # Apache's LimitRequestLine and nginx's header buffers: longer was never a served request
BOUNDED_FIELDS = ("path", "query", "request", "referer", "user_agent", "vhost", "protocol", "method",
                  *HEADER_COLUMNS)


def bounded(text: pl.Expr, limit: int = FIELD_CHARS) -> pl.Expr:
    """``text`` clipped to ``limit`` characters where it is longer (its byte length is known without
    reading it, so the common short value costs nothing): every log field is written by the
    client, and a field of a megabyte would be held, matched and reported at that size."""
    text = text.cast(pl.String)   # a field the format does not log is a null literal
    return pl.when(text.str.len_bytes() > limit).then(text.str.slice(0, limit)).otherwise(text)


def _byte_count(fmt: LogFormat) -> pl.Expr:
    """Bytes sent as Int64, null where not logged ('-') or beyond Int64 (9.2e18 and up, 1e30)."""
    return _decoded(fmt, "bytes").cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)


def _out_of_range(fmt: LogFormat, groups: set[str]) -> pl.Expr:
    """Why a line's numbers cannot be stored (a reason for the unparsed table), or null. A number
    that reads but does not fit its column makes the line unparsed rather than a zero."""
    if "bytes" not in groups:
        return pl.lit(None, dtype=pl.String)
    number = _decoded(fmt, "bytes").cast(pl.Float64, strict=False)
    return pl.when(number.is_not_null() & _byte_count(fmt).is_null()) \
        .then(pl.lit("bytes out of range")).otherwise(None)


def canonical(fmt: LogFormat, tz: str, source: str, real_ip_group: str | None = None) -> list[list[pl.Expr]]:
    """Stages of expressions (apply each with ``with_columns``, the last with ``select``) turning
    the format's groups into EVENT_SCHEMA columns, plus ``_naive`` (time logged without an
    offset) and ``_real_ip_hdr`` when ``real_ip_group`` is given. Intermediate results are
    columns so that no sub-expression is evaluated twice: Polars does not share a Python decoding
    between the expressions that read it (clipping and '-' to null read a field three times each),
    so a group decoded in Python is replaced by its decoded text in the first stage."""
    groups = set(fmt.groups)
    local, offset = local_time(groups)
    first = [local.alias("_local"), offset.cast(pl.Int32).alias("_offset"), address("client_ip").alias("_client"),
             pl.col("client_ip").is_not_null().alias("_matched")]
    done = set()
    for name in sorted(groups - {"request"}):
        python = _python_decoder(fmt, name)
        if python is not None:
            first.append(pl.col(name).map_batches(python, return_dtype=pl.String, is_elementwise=True).alias(name))
            done.add(name)
    if "peer_ip" in groups:
        first.append(address("peer_ip").alias("_peer"))
    second = []
    if "request" in groups:
        first.append(_decoded(fmt, "request").alias("_request"))
        second.append(pl.col("_request").str.extract_groups(_REQUEST_LINE).alias("_parts"))
    return [first, second, _final(fmt, groups, tz, source, real_ip_group, done)]


def _final(fmt: LogFormat, groups: set[str], tz: str, source: str, real_ip_group: str | None,
           done: Set[str]) -> list[pl.Expr]:
    request = _request_parts(fmt, groups, done)
    path, query, host = _path_query_host(fmt, groups, request["target"], done)

    def opt(name: str, expr: pl.Expr | None = None) -> pl.Expr:
        return (expr if expr is not None else _decoded(fmt, name, done)) if name in groups else pl.lit(None)
    stamp, minutes, naive = utc_time(tz)
    columns = {
        "timestamp": stamp, "tz_offset_min": minutes, "client_ip": pl.col("_client"),
        "peer_ip": pl.col("_peer" if "peer_ip" in groups else "_client"),
        "method": request["method"], "path": path, "query": query, "protocol": request["protocol"],
        "request": request["request"],
        "status": opt("status", _decoded(fmt, "status").cast(pl.Int16, strict=False)),
        "bytes": opt("bytes", _byte_count(fmt).fill_null(0)),
        "referer": opt("referer"), "user_agent": opt("user_agent"),
        "vhost": pl.coalesce(opt("vhost"), host),
        **{column: opt(group) for column, (group, _) in HEADER_COLUMNS.items()},
        "request_time": request_time(groups),
        "line_number": pl.col("line_number"), "source": pl.lit(source),
    }
    exprs = [(bounded(expr) if name in BOUNDED_FIELDS else expr).cast(EVENT_SCHEMA[name]).alias(name)
             for name, expr in columns.items()]
    exprs.append(naive.alias("_naive"))
    exprs.append(_out_of_range(fmt, groups).alias("_bad_number"))
    if real_ip_group:
        exprs.append((_decoded(fmt, real_ip_group, done) if real_ip_group in groups else pl.lit(None, pl.String))
                     .alias("_real_ip_hdr"))
    return exprs
