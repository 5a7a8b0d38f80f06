"""The Sigma webserver taxonomy mapped onto the events table, and the derived columns ("views")
that compiled rules read. Nothing here imports pySigma: a run whose compiled rule pack comes from
the cache (see sigma_cache) evaluates rules with this module alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from log_analyser_core.parsing.events import HEADER_COLUMNS


@dataclass(frozen=True)
class Field:
    """Where a Sigma field's value comes from: an events column (or a derived one) and whether
    it is URL-encoded as sent (then it is matched decoded too)."""

    column: str
    encoded: bool = False


KEYWORDS = "_line"  # keyword (field-less) detections search the whole raw log line
# The Sigma webserver taxonomy -> our columns. cs-uri-query is matched against the whole URI
# because SigmaHQ rules put path fragments there (IIS logs the query apart; Apache does not).
FIELDS: dict[str, Field] = {
    "c-ip": Field("client_ip"),
    "cs-method": Field("method"),
    "cs-uri-stem": Field("path", encoded=True),
    "cs-uri-query": Field("_uri", encoded=True),
    "cs-uri": Field("_uri", encoded=True),
    "sc-status": Field("_status"),
    "sc-bytes": Field("_bytes"),
    "cs-user-agent": Field("user_agent"),
    "cs-referer": Field("referer", encoded=True),
    "cs-host": Field("vhost"),
    "cs-version": Field("protocol"),
    # logged request headers: the W3C extended form (cs(Header)), the header name as SigmaHQ's
    # proxy rules write it, and the dashed form
    **{name: Field(column) for column, (_, header) in HEADER_COLUMNS.items()
       for name in (f"cs({header})", header, f"cs-{header.lower()}")},
    KEYWORDS: Field("_line", encoded=True),
}
# Derived columns, built from EVENT_SCHEMA columns only.
DERIVED: dict[str, pl.Expr] = {
    "_uri": pl.when(pl.col("query").is_not_null()).then(pl.col("path") + "?" + pl.col("query"))
              .otherwise(pl.col("path")),
    "_status": pl.col("status").cast(pl.String),
    "_bytes": pl.col("bytes").cast(pl.String),
    "_line": pl.col("raw"),
}
# Percent-escapes of ASCII bytes, plus the overlong UTF-8 forms of . / \ that IIS once accepted.
_ESCAPES = {f"%{b:02x}": chr(b) for b in range(0x80)} | {"%c0%ae": ".", "%c0%af": "/", "%c1%9c": "\\"}


ENCODING_MARKS = ["%", "+"]   # a value without these is the same URL-decoded


def url_decode(expr: pl.Expr) -> pl.Expr:
    """Percent-decoding (applied twice, for double encoding) and '+' as space; escapes of
    non-ASCII bytes stay as they are."""
    once = expr.str.replace_many(list(_ESCAPES), list(_ESCAPES.values()), ascii_case_insensitive=True)
    twice = once.str.replace_many(list(_ESCAPES), list(_ESCAPES.values()), ascii_case_insensitive=True)
    return twice.str.replace_all("+", " ", literal=True)


def source_columns(column: str) -> list[str]:
    """The events columns a field column is built from."""
    source = DERIVED.get(column)
    return source.meta.root_names() if source is not None else [column]


def view_columns(names: set[str], plain: bool = False) -> list[list[pl.Expr]]:
    """The stages of derived columns that ``names`` need, to apply with ``with_columns`` in order.

    A view is ``column``, ``column:dec`` (URL-decoded), ``column:any`` (as logged, a newline and
    decoded, for substring search), each optionally ``:low`` (lower-cased). ``plain`` says that
    no value holds '%' or '+' (see ``ENCODING_MARKS``), so decoding would change nothing."""
    bases = {name.split(":")[0] for name in names}
    stage1 = [DERIVED[b].alias(b) for b in sorted(bases) if b in DERIVED]
    stage2 = [(pl.col(b) if plain else url_decode(pl.col(b))).alias(f"{b}:dec") for b in sorted(bases)
              if any(n.startswith(f"{b}:dec") or n.startswith(f"{b}:any") for n in names)]
    stage3 = [(pl.col(n.split(":")[0]) if plain else _any(n.split(":")[0])).alias(n)
              for n in sorted(names) if n.endswith(":any")]
    stage4 = [pl.col(n.removesuffix(":low")).str.to_lowercase().alias(n) for n in sorted(names)
              if n.endswith(":low")]
    return [stage for stage in (stage1, stage2, stage3, stage4) if stage]


def _any(base: str) -> pl.Expr:
    raw, dec = pl.col(base), pl.col(f"{base}:dec")
    return pl.when(raw != dec).then(raw + "\n" + dec).otherwise(raw)
