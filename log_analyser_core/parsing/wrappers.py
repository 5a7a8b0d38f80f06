"""Envelopes that log collectors put around an access line, as data: each is a regular expression
for the envelope (anchored at the start of the line) and how to take the line out of it, applied
to whole columns. A source's wrapper is detected from its first lines (see :func:`detect`); the
format behind it is then detected as usual.

* ``syslog``: RFC 3164 relays (``<PRI>`` optional, host and tag each optional:
  ``Sep 15 16:13:46 web1 nginx[2869]: <line>``), and RFC 5424 (``<PRI>1 TIMESTAMP HOST APP PROCID
  MSGID [SD] <line>``);
* ``cri``: the Kubernetes / containerd CRI log (``2024-05-01T10:00:00.123456789Z stdout F <line>``);
* ``docker``: Docker's json-file (``{"log":"<line>\\n","stream":"stdout","time":"..."}``).

A collector splits a long line into pieces (CRI ``P`` tags, Docker entries without their ``\\n``).
CRI pieces are joined to the line they continue (:func:`join_pieces`); Docker's, and a CRI piece
whose end is not in the same chunk, are counted as unparsed ``partial line``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import polars as pl

_MONTH_DAY_TIME = r"[A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d"
_PRI = r"<\d{1,3}>"
# RFC 5424 structured data: '-' or one or more [id param="value" ...] elements (\] and \" escaped)
_SD = r'(?:-|(?:\[(?:[^\]"\\]|\\.|"(?:[^"\\]|\\.)*")*\])+)'
_TAG = r"[A-Za-z0-9_./-]{1,48}(?:\[\d+\])?: "


@dataclass(frozen=True)
class Wrapper:
    """An envelope: ``pattern`` matches it (as a prefix); ``name`` is shown in the summary
    (``syslog + combined``). ``json`` envelopes hold the line in a JSON string instead."""

    name: str
    pattern: str
    json_path: str | None = None
    stream_group: bool = False   # the pattern captures the stream (stdout/stderr) and the partial tag

    def strip(self, raw: pl.Expr) -> pl.Expr:
        """The access line inside the envelope; lines without the envelope are kept as they are."""
        if self.json_path is not None:
            inner = raw.str.json_path_match(self.json_path).str.strip_suffix("\n")
            return pl.when(raw.str.starts_with("{")).then(pl.coalesce(inner, raw)).otherwise(raw)
        return raw.str.replace(self.pattern, "")

    def partial(self, raw: pl.Expr) -> pl.Expr:
        """Lines that hold only a piece of a longer line (a collector's split)."""
        if self.name == "cri":
            return raw.str.contains(r"^\S+ (?:stdout|stderr) P ")
        if self.json_path is not None:
            inner = raw.str.json_path_match(self.json_path)
            return (raw.str.starts_with("{") & inner.is_not_null() & ~inner.str.ends_with("\n")).fill_null(False)
        return pl.lit(False)

    def stderr(self, raw: pl.Expr) -> pl.Expr:
        """Lines the container wrote to standard error (ingress-nginx, Traefik and Envoy write
        their error log there)."""
        if self.name == "cri":
            return raw.str.contains(r"^\S+ stderr ")
        if self.json_path is not None:
            return raw.str.contains(r'"stream"\s*:\s*"stderr"')
        return pl.lit(False)


# Tried in this order; several syslog shapes share a name (the host-only and bare shapes are
# ambiguous with each other, so detection keeps the one whose inner lines parse best).
WRAPPERS: tuple[Wrapper, ...] = (
    Wrapper("cri", r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d) (?:stdout|stderr) [FP] "),
    Wrapper("docker", r'^\{"log":', json_path="$.log"),
    Wrapper("syslog", rf"^{_PRI}1 \S+ \S+ \S+ \S+ \S+ {_SD} (?:\x{{FEFF}})?"),
    Wrapper("syslog", rf"^(?:{_PRI})?(?:\d )?{_MONTH_DAY_TIME} \S+ {_TAG}"),
    Wrapper("syslog", rf"^(?:{_PRI})?(?:\d )?{_MONTH_DAY_TIME} {_TAG}"),
    Wrapper("syslog", rf"^(?:{_PRI})?(?:\d )?{_MONTH_DAY_TIME} \S+ "),
    Wrapper("syslog", rf"^(?:{_PRI})?(?:\d )?{_MONTH_DAY_TIME} "),
)
SHARE = 0.5   # a wrapper is considered when it matches more than this share of the sampled lines


def candidates(sample: pl.Series) -> list[Wrapper]:
    """Wrappers whose envelope is on more than half of ``sample``'s non-blank lines, in order."""
    lines = sample.filter(sample.str.strip_chars() != "")
    if lines.len() == 0:
        return []
    found = []
    for wrapper in WRAPPERS:
        if wrapper.json_path is not None:
            share = cast(float, lines.str.starts_with('{"log":').mean() or 0.0)
        else:
            share = cast(float, lines.str.contains(wrapper.pattern).mean() or 0.0)
        if share > SHARE:
            found.append(wrapper)
    return found


def unwrap(sample: pl.Series, wrapper: Wrapper) -> pl.Series:
    """``sample`` with the envelope taken off every line that has it."""
    return sample.to_frame("raw").select(wrapper.strip(pl.col("raw"))).to_series()


_CRI_ENVELOPE = r"^(\S+ (?:stdout|stderr) )[FP] "


def join_pieces(numbered: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """CRI lines (``raw``, ``line_number``) with each run of ``P`` pieces joined to the ``F`` line
    that ends it: the joined line keeps the first piece's number and reads as one ``F`` line. Also
    returns the pieces after the first of each joined run (``line_number``, ``raw``), or None.
    Pieces with no ``F`` line after them in ``numbered`` stay as they are."""
    raw = pl.col("raw")
    piece = raw.str.contains(r"^\S+ (?:stdout|stderr) P ").fill_null(False)
    flags = numbered.select(piece.alias("p")).to_series()
    if not flags.any():
        return numbered, None
    run = (~flags).cast(pl.UInt32).cum_sum().shift(1, fill_value=0)   # a run ends with its F line
    closed = run < int((~flags).sum())                                  # the last run may be open
    frame = numbered.with_columns(_run=run, _closed=closed, _n=pl.len().over(run))
    joined = (frame.filter(pl.col("_closed") & (pl.col("_n") > 1))
              .group_by("_run", maintain_order=True)
              .agg(pl.col("line_number").first(),
                   (pl.col("raw").last().str.extract(_CRI_ENVELOPE, 1) + "F "
                    + raw.str.replace(_CRI_ENVELOPE, "").str.join("")).alias("raw")))
    whole = frame.filter(~pl.col("_closed") | (pl.col("_n") == 1)).select("raw", "line_number")
    lines = pl.concat([whole, joined.select("raw", "line_number")]).sort("line_number")
    firsts = joined["line_number"]
    rest = frame.filter(pl.col("_closed") & (pl.col("_n") > 1) & ~pl.col("line_number").is_in(firsts.implode()))
    return lines, rest.select("line_number", "raw")
