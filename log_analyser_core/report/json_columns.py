"""The JSON of many quiet clients at once, written from their columns by Polars.

A run over a million distinct clients writes a million findings that say nothing but their
numbers (results.Findings: not flagged, no evidence, no deviation). Building a dict per client
and encoding it took most of such a run; here each value column is turned into its JSON text in
one expression, and the texts are put between the fixed pieces of a template taken from the
writer's own encoding of one such finding. The text is the one orjson writes for that finding,
byte for byte (tests/test_json_columns.py): Polars writes a float64 as orjson does (the shortest
text that reads back to it), infinities and NaN are null, times are orjson's UTC text.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import orjson
import polars as pl

ITEM_INDENT = "    "   # an item of the report's "findings" list: two levels of two spaces
_PLAIN = r"^[ !#-\[\]-~]*$"   # printable ASCII but the quote and the backslash: orjson writes it as it is
_SENTINEL = "\x00{}\x00"


def indented(document: object) -> str:
    """One finding's JSON as an item of the report's "findings" list."""
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
    return ITEM_INDENT + text.replace("\n", "\n" + ITEM_INDENT)


def template(sample: dict[str, object],
             values: Sequence[tuple[str, ...]]) -> tuple[list[str], list[tuple[str, ...]]]:
    """The fixed pieces of ``sample``'s indented text around the values at the key paths ``values``
    (``("ip",)``, ``("features", "requests")``), and those paths in the order the text holds
    them: len(values) + 1 pieces."""
    marked = orjson.loads(orjson.dumps(sample))
    for k, path in enumerate(values):
        inner = marked
        for key in path[:-1]:
            inner = inner[key]
        inner[path[-1]] = _SENTINEL.format(k)
    text = indented(marked)
    markers = [orjson.dumps(_SENTINEL.format(k)).decode() for k in range(len(values))]
    assert all(text.count(marker) == 1 for marker in markers), "each value appears once in the template"
    ordered = sorted(range(len(values)), key=lambda k: text.index(markers[k]))
    pieces = []
    for k in ordered:
        head, text = text.split(markers[k])
        pieces.append(head)
    return [*pieces, text], [values[k] for k in ordered]


def value_text(name: str, dtype: pl.DataType) -> pl.Expr | None:
    """The JSON text of column ``name``'s values as orjson writes the Python values Polars gives
    (None: a dtype this module does not write; the caller encodes those rows itself). Strings
    that orjson would escape are left null, to be encoded one by one (see texts)."""
    column = pl.col(name)
    if dtype.is_float():
        as_float = column.cast(pl.Float64)
        return pl.when(as_float.is_finite()).then(as_float.cast(pl.String)).otherwise(pl.lit("null")) \
            .fill_null("null")
    if dtype.is_integer():
        return column.cast(pl.String).fill_null("null")
    if dtype == pl.Boolean:
        return pl.when(column).then(pl.lit("true")).otherwise(pl.lit("false")).fill_null("null")
    if isinstance(dtype, pl.Datetime) and dtype.time_zone == "UTC":
        whole = column.dt.strftime('"%Y-%m-%dT%H:%M:%SZ"')
        fraction = column.dt.strftime('"%Y-%m-%dT%H:%M:%S%.6fZ"')
        in_range = column.dt.year().is_between(1000, 9999)   # orjson's years have four digits
        return pl.when(column.is_null()).then(pl.lit("null")) \
            .when(in_range & (column.dt.microsecond() == 0)).then(whole) \
            .when(in_range).then(fraction)
    if dtype in (pl.String, pl.Categorical, pl.Enum) or isinstance(dtype, pl.Categorical | pl.Enum):
        text = column.cast(pl.String)
        return pl.when(text.is_null()).then(pl.lit("null")) \
            .when(text.str.contains(_PLAIN)).then(pl.lit('"') + text + pl.lit('"'))
    return None


def texts(frame: pl.DataFrame, pieces: list[str], columns: Sequence[str],
          encode: Callable[[str, object], str], written: Collection[str] = ()) -> pl.Series | None:
    """Each row's text: ``pieces`` around the JSON of ``columns`` (in order); the ``written``
    columns already hold JSON text. A value the expressions leave null (an unusual string or
    time) is written by ``encode(column, value)``; None when a column's dtype is not one this
    module writes."""
    expressions = []
    for name in columns:
        expression = pl.col(name) if name in written else value_text(name, frame.schema[name])
        if expression is None:
            return None
        expressions.append(expression.alias(name))
    values = frame.select(expressions)
    odd = [name for name in columns if values[name].null_count()]
    for name in odd:   # rare: fill them from Python's own values
        missing = values[name].is_null()
        fixed = [encode(name, value) for value in frame[name].filter(missing).to_list()]
        values = values.with_columns(values[name].scatter(missing.arg_true(), fixed))
    parts: list[pl.Expr] = []
    names: list[str | None] = [*columns, None]
    for piece, column in zip(pieces, names, strict=True):
        parts.append(pl.lit(piece))
        if column is not None:
            parts.append(pl.col(column))
    return values.select(pl.concat_str(parts).alias("text"))["text"]
