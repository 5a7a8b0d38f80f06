"""Rule hits grouped per (client, rule) with their example lines: what the Sigma and CRS stages
turn into Evidence."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import polars as pl

from log_analyser_core.parsing import sources as log_input
from log_analyser_core.results import Evidence, ExampleLine


def by_client(events: pl.DataFrame, hits: pl.DataFrame, examples: int, firsts: tuple[str, ...] = (),
              read_back: bool = True) -> Iterator[tuple[dict, tuple[ExampleLine, ...]]]:
    """One (row, example lines) per client and rule that fired, clients in order, rules in
    order within a client. ``hits`` has ``_row`` (an index into ``events``), ``rule`` and the
    ``firsts`` columns, whose first value per group goes into the row beside ``client_ip``,
    ``rule`` and ``count`` (requests that fired it). The first ``examples`` lines by place are
    read back from their file, or rebuilt from the fields where it cannot be read again; with
    ``read_back`` False always rebuilt (live mode: a followed file may have been rotated since, so
    its line numbers name other lines, and reading a growing file again costs a pass over it)."""
    lines = events.select("client_ip", "source", "line_number")[hits["_row"]]
    long = pl.concat([lines, hits], how="horizontal").sort("client_ip", "rule", "source", "line_number")
    grouped = long.group_by("client_ip", "rule", maintain_order=True).agg(
        pl.len().alias("count"), *(pl.first(c) for c in firsts), pl.col("source").head(examples),
        pl.col("line_number").head(examples), pl.col("_row").head(examples))
    # the example events fetched by row: a join on the whole table would copy it
    shown = events[grouped["_row"].explode().unique()]
    raw = log_input.with_raw(shown) if read_back else log_input.with_rebuilt(shown)
    by_place = {(s, n): ExampleLine(source=s, line_number=n, raw=r, rebuilt=b)
                for s, n, r, b in raw.select("source", "line_number", "raw", "rebuilt").iter_rows()}
    for row in grouped.iter_rows(named=True):
        yield row, tuple(by_place[(s, n)] for s, n in zip(row["source"], row["line_number"], strict=True))


def evidence_by_client(events: pl.DataFrame, hits: pl.DataFrame, examples: int,
                       evidence: Callable[[dict, tuple[ExampleLine, ...]], Evidence],
                       order: Callable[[Evidence], Any],
                       firsts: tuple[str, ...] = (), read_back: bool = True) -> dict[str, tuple[Evidence, ...]]:
    """Evidence per client IP: ``evidence(row, example lines)`` for each client and rule that fired
    (see by_client), each client's sorted by ``order``."""
    if hits.height == 0:
        return {}
    found: dict[str, list[Evidence]] = {}
    for row, shown in by_client(events, hits, examples, firsts=firsts, read_back=read_back):
        found.setdefault(row["client_ip"], []).append(evidence(row, shown))
    return {ip: tuple(sorted(items, key=order)) for ip, items in found.items()}
