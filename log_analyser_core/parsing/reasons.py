"""Why a line gave no event: a line that should have parsed (it does not match the format, its
client is not an address, its time is unreadable, a collector split it) or a line that is not an
access line at all (blank, a header, an error-log line), which is counted apart."""
from __future__ import annotations

import polars as pl

from log_analyser_core.parsing.formats import LogFormat
from log_analyser_core.parsing.wrappers import Wrapper

# Lines that are not access lines at all: counted apart by kind (ParseStats.not_access), not kept
# with the unparsed lines and never part of the unparsed ratio that stops a run.
JOINED_PIECE = "piece joined to the line it continues"   # CRI 'P' pieces, read as part of the next line
NOT_ACCESS_REASONS = ("blank line", "header line", "error-log line", JOINED_PIECE)
# Error-log lines that servers interleave with access lines (nginx, Apache 2.2/2.4, klog as the
# ingress-nginx controller writes it, Envoy's own log). Anchored at the start of the line, which
# the server writes: no client can make an access line look like one.
ERROR_LOG = "|".join((
    r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(?:debug|info|notice|warn|error|crit|alert|emerg)\] \d+#\d+: ",
    r"^\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)? \d{4}\] \[(?:[\w-]+:)?"
    r"(?:emerg|alert|crit|error|warn|notice|info|debug|trace\d)\] ",
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ",
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\]\[\d+\]\[\w+\]",
))


def unparsed_reason(fmt: LogFormat, wrapper: Wrapper | None) -> pl.Expr:
    """Why a line gave no event; evaluated on those lines only."""
    line = pl.col("_line")
    header = line.str.starts_with("#")
    if fmt.header_prefix:
        header = header | line.str.starts_with(fmt.header_prefix)
    error_log = line.str.contains(ERROR_LOG)
    partial = pl.lit(False)
    if wrapper is not None:
        error_log = error_log | wrapper.stderr(pl.col("raw"))
        partial = wrapper.partial(pl.col("raw"))
    return (pl.when(line.str.contains(r"^\s*$")).then(pl.lit("blank line"))
            .when(header).then(pl.lit("header line"))
            .when(partial).then(pl.lit(f"partial line (split by {wrapper.name if wrapper else ''})"))
            .when(error_log).then(pl.lit("error-log line"))
            .when(pl.col("_matched") & pl.col("client_ip").is_null())
            .then(pl.lit("client address is not an IP address"))
            .when(pl.col("client_ip").is_null()).then(pl.lit(f"does not match the {fmt.name} format"))
            .otherwise(pl.lit("unreadable timestamp")))
