"""A faster reading of the quote-delimited formats most servers write (Apache combined, common and
their virtual-host variants, nginx combined and main): split each line on its double quotes, check
every piece, and capture only within the short unquoted pieces, instead of running the format's
whole regex with captures over every line.

A line takes this path only when it splits into exactly the format's pieces and holds no escaped
quote (``\\"``); each unquoted piece must match the format's own regex for that piece. Every other
line is read by the format's full regex, so both paths capture the same groups (tested on the
golden samples, the shared real logs and generated lines). As with the regex, nothing here runs
Python per line: each step is a Polars expression over the whole column.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import polars as pl

from log_analyser_core.parsing import formats
from log_analyser_core.parsing.formats import LogFormat

# The presets this path reads; their format strings put every quoted field in quotes of its own.
SPLIT_PRESETS = ("combined", "common", "vcombined", "vcommon", "nginx", "main")
_ESCAPED_QUOTE = '\\"'
_GROUP = re.compile(r"\(\?P<([a-z_]+)>")


@dataclass(frozen=True)
class Piece:
    """One piece of a line between two double quotes: ``regex`` (anchored) checks and captures an
    unquoted piece; a quoted piece is taken whole as ``group`` (None: read over)."""

    quoted: bool
    regex: str | None = None
    group: str | None = None
    groups: tuple[str, ...] = ()    # the groups the regex captures, in order
    checked_by_group: bool = False  # a non-null first group means the piece matched (no separate check)


@functools.lru_cache(maxsize=64)
def layout(fmt: LogFormat) -> tuple[Piece, ...] | None:
    """The pieces of ``fmt``'s lines, or None when the format is not one this path reads. The pieces'
    regexes joined by quoted fields must rebuild ``fmt.regex`` exactly, so the two paths cannot drift."""
    if fmt.name not in SPLIT_PRESETS or fmt.regex is None or fmt.decoders or fmt.header_prefix:
        return None
    nginx = bool(formats._NGINX_TOKEN.search(fmt.source))
    token, lookup = ((formats._NGINX_TOKEN, formats._nginx_lookup) if nginx
                     else (formats._APACHE_TOKEN, formats._apache_lookup))
    texts = fmt.source.split('"')
    tail = formats._OPTIONAL_TAIL if fmt.regex.endswith(formats._OPTIONAL_TAIL + "$") else r"[ \t]*"
    pieces, rebuilt = [], []
    for index, text in enumerate(texts):
        if index % 2:
            match = token.fullmatch(text)
            if match is None:   # literal text inside the quotes: not a single quoted field
                return None
            group = lookup(match, []).group
            rebuilt.append(f'"(?P<{group}>{formats.QUOTED})"' if group else f'"(?:{formats.QUOTED})"')
            pieces.append(Piece(quoted=True, group=group))
            continue
        body = formats._compile_tokens(text, token, lookup)
        rebuilt.append(body)
        regex = f"^{body}{tail}$" if index == len(texts) - 1 else f"^{body}$"
        groups = tuple(_GROUP.findall(regex))
        own = tuple(_GROUP.findall(body))   # captured outside the optional tail: present on every match
        pieces.append(Piece(quoted=False, regex=regex, groups=groups, checked_by_group=bool(own)))
    if f"^{''.join(rebuilt)}{tail}$" != fmt.regex:
        return None
    return tuple(pieces)


def capture(numbered: pl.DataFrame, fmt: LogFormat, line: pl.Expr, text: pl.Expr) -> pl.DataFrame | None:
    """``numbered`` (``raw``, ``line_number``) with ``_line`` (``line``: the line out of its collector's
    envelope) and one String column per group of ``fmt.regex``, exactly as
    ``text.str.extract_groups(fmt.regex)`` would capture them; ``text`` is the line as the format reads
    it, an expression over ``_line``. None when ``fmt`` has no split layout."""
    split = split_groups(numbered, fmt, line)
    if split is None:
        return None
    return _with_fallback(split.collect(engine="streaming"), fmt, text)


def split_groups(numbered: pl.DataFrame, fmt: LogFormat, line: pl.Expr) -> pl.LazyFrame | None:
    """What ``capture`` reads, lazily and without the fallback: ``numbered`` with ``_line``, the
    groups as the split reads them and ``_ok``, true where the split read the line (elsewhere the
    groups are meaningless and the line must be read with the regex). None when ``fmt`` has no
    split layout."""
    pieces = layout(fmt)
    if pieces is None:
        return None
    parts = pl.col("_parts")
    ok = (parts.list.len() == len(pieces)) & ~pl.col("_line").str.contains(_ESCAPED_QUOTE, literal=True)
    columns: list[pl.Expr] = []
    structs: list[str] = []
    for index, piece in enumerate(pieces):
        part = parts.list.get(index, null_on_oob=True)
        if piece.quoted:
            if piece.group:
                columns.append(part.alias(piece.group))
            continue
        assert piece.regex is not None, "unquoted pieces have a regex"
        if piece.groups:   # one struct per piece, unnested after: each regex runs once
            columns.append(part.str.extract_groups(piece.regex).alias(f"_piece{index}"))
            structs.append(f"_piece{index}")
        if piece.checked_by_group:
            ok = ok & pl.col(piece.groups[0]).is_not_null()
        else:
            ok = ok & part.str.contains(piece.regex).fill_null(False)
    # ``_line`` is split as it is: a line wrapped in an extra pair of quotes (which ``text`` unwraps)
    # splits into an empty first piece, fails the first piece's check and is read by the regex.
    return (numbered.lazy().with_columns(line.alias("_line"))
            .with_columns(pl.col("_line").str.split('"').alias("_parts"))
            .with_columns(columns).unnest(*structs).with_columns(ok.fill_null(False).alias("_ok"))
            .drop("_parts"))


def _with_fallback(frame: pl.DataFrame, fmt: LogFormat, text: pl.Expr) -> pl.DataFrame:
    """The rows the split could not read, read again with the format's full regex."""
    missed = (~frame["_ok"]).arg_true()
    frame = frame.drop("_ok")
    if missed.len() == 0:
        return frame
    assert fmt.regex is not None, "only regex formats have a split layout"
    again = frame[missed].select(text.str.extract_groups(fmt.regex).alias("_m")).unnest("_m")
    return frame.with_columns(frame[name].scatter(missed, again[name]) for name in again.columns)
