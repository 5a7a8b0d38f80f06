"""Input plumbing around the parser: rotated-file order, the real client behind proxies,
time windows, and fetching example lines back from their source by line number.

Everything here works on whole columns or on the distinct values of one (a log has far fewer
distinct proxy headers than lines); nothing loops over lines in Python.
"""
from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from log_analyser_core.errors import ConfigError
from log_analyser_core.parsing import address as client_address
from log_analyser_core.parsing import reader as log_reader

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_COMPRESSED = re.compile(r"\.(?:gz|bz2|xz)$")
_ROTATION_NUMBER = re.compile(r"^(?P<base>.*?)[.-](?P<n>\d{1,4})$")
_ROTATION_DATE = re.compile(r"^(?P<base>.*?)[.-](?P<date>\d{4}-?\d\d-?\d\d(?:[-_]?\d+)?)$")
_RELATIVE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|min|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class InputOptions:
    """How lines become events beyond their format.

    ``tz``: zone for timestamps logged without an offset. ``real_ip_header``: one of
    ``log_formats.REAL_IP_HEADERS`` or None. ``trusted_proxies``: proxy networks whose
    headers are believed (empty = every peer is a trusted proxy). ``since``/``until``: a
    half-open UTC window [since, until) of event times kept. ``max_decompressed``: bytes a
    compressed input may decompress to (None: reader.MAX_DECOMPRESSED_BYTES; 0: no limit).
    """

    tz: str = "UTC"
    real_ip_header: str | None = None
    trusted_proxies: tuple[Network, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    max_decompressed: int | None = None


def order_rotated(sources: Sequence[str]) -> list[str]:
    """Sources in time order: for each base name, the highest rotation number (oldest) first,
    dated rotations by date, the live file last. ``-`` and unrelated files keep their places
    relative to their base name's first appearance."""
    first_seen: dict[str, int] = {}
    keyed = []
    for position, source in enumerate(sources):
        base, age = _rotation_key(source)
        first_seen.setdefault(base, position)
        keyed.append((first_seen[base], age, position, source))
    return [source for *_, source in sorted(keyed)]


def _rotation_key(source: str) -> tuple[str, tuple]:
    """(base name, sort key within the base: older first)."""
    name = _COMPRESSED.sub("", source)
    number = _ROTATION_NUMBER.match(name)
    if number and not _ROTATION_DATE.match(name):
        return number["base"], (0, -int(number["n"]), "")
    dated = _ROTATION_DATE.match(name)
    if dated:
        return dated["base"], (1, 0, dated["date"].replace("-", ""))
    return name, (2, 0, "")


def parse_networks(text: str) -> tuple[Network, ...]:
    """``10.0.0.0/8,2001:db8::/32,192.0.2.7`` as networks; raises ConfigError naming a bad entry."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"--trusted-proxies: {item!r} is not an address or CIDR network") from None
    return tuple(networks)


def parse_time_bound(text: str, now: datetime, tz: str = "UTC") -> datetime:
    """``--since``/``--until`` values: relative (``24h``, ``30m``, ``7d``, ``2w`` before ``now``) or
    absolute ISO 8601 (``2026-03-10``, ``2026-03-10T08:00``, with or without an offset; without one
    it is read in ``tz``). Returns an aware UTC datetime."""
    relative = _RELATIVE.match(text.strip().lower())
    if relative:
        return now.astimezone(UTC) - timedelta(seconds=float(relative["n"]) * _UNITS[relative["unit"]])
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise ConfigError(f"cannot read time {text!r}",
                          hint="use e.g. 24h, 7d, 2026-03-10 or 2026-03-10T08:00:00+01:00") from None
    if moment.tzinfo is None:
        from zoneinfo import ZoneInfo

        moment = moment.replace(tzinfo=ZoneInfo(tz))
    return moment.astimezone(UTC)


def real_client(peer: str | None, header: str | None, trusted: tuple[Network, ...]) -> str | None:
    """The client address for one (peer, header) pair, or the peer when the header is absent,
    garbage, or sent by an untrusted peer.

    With no trusted networks every peer counts as a proxy and the leftmost valid address is the
    client. With trusted networks the header is believed only from a trusted peer, and the list
    is walked from the right, skipping trusted hops (nginx real_ip_recursive).
    """
    return _real_client(peer, header, trusted)[0]


def _real_client(peer: str | None, header: str | None,
                 trusted: tuple[Network, ...]) -> tuple[str | None, bool]:
    """(real_client's answer, whether the header held a hop that is not an address)."""
    parts = [part for part in (header or "").split(",") if part.strip()]
    found = [_address(part) for part in parts]
    hops = [hop for hop in found if hop is not None]
    refused = len(hops) < len(found)
    if not hops or peer is None:
        return peer, refused
    if not trusted:
        return str(hops[0]), refused
    if not _trusted(_address(peer), trusted):
        return peer, refused
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return str(hop), refused
    return str(hops[0]), refused


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"').strip("[]")
    if text.count(":") == 1 and "." in text:  # ip:port
        text = text.split(":", 1)[0]
    canonical = client_address.canonical(text)   # a scoped IPv6 address is not one: its scope is free text
    return None if canonical is None else ipaddress.ip_address(canonical)


def _trusted(address, trusted: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in trusted)


def resolve_real_ip(frame: pl.DataFrame, header: str, trusted: tuple[Network, ...]) -> tuple[pl.Series, pl.Series]:
    """(``client_ip``, whether the header held a value that is not an address) for every row of
    ``frame`` (columns ``peer_ip`` and ``header``), computed once per distinct (peer, header) pair."""
    pairs = frame.select(pl.col("peer_ip").cast(pl.String), pl.col(header)).unique()
    resolved = [_real_client(peer, value, trusted) for peer, value in pairs.iter_rows()]
    table = pairs.with_columns(pl.Series("_client", [client for client, _ in resolved], dtype=pl.String),
                               pl.Series("_refused", [refused for _, refused in resolved], dtype=pl.Boolean))
    joined = frame.select(pl.col("peer_ip").cast(pl.String), header).join(
        table, on=["peer_ip", header], how="left", nulls_equal=True, maintain_order="left")
    return joined["_client"], joined["_refused"]


def is_readable_again(source: str) -> bool:
    """Whether example lines can be fetched later (files yes, standard input no)."""
    return source != "-" and os.path.isfile(source)


def rebuilt_line() -> pl.Expr:
    """A combined-format line rebuilt from an event's parsed fields: what keyword rules search
    (the events table keeps no raw text) and the stand-in for lines that cannot be read again."""
    def text(name: str) -> pl.Expr:
        return pl.col(name).cast(pl.String).fill_null("-")
    target = pl.col("path").fill_null("") + pl.when(pl.col("query").is_not_null()).then(
        "?" + pl.col("query")).otherwise(pl.lit(""))
    request = pl.coalesce(pl.col("request").cast(pl.String),
                          pl.concat_str([text("method"), target, text("protocol")], separator=" "))
    stamp = pl.col("timestamp").dt.strftime("%d/%b/%Y:%H:%M:%S +0000").fill_null("-")
    return pl.format('{} - - [{}] "{}" {} {} "{}" "{}"', text("client_ip"), stamp, request,
                     pl.col("status").cast(pl.String).fill_null("-"), pl.col("bytes").cast(pl.String).fill_null("-"),
                     text("referer"), text("user_agent"))


def read_back(places: Iterable[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """The text of each (source, line number) that can be read again (files, not standard input),
    one pass per source."""
    wanted: dict[str, set[int]] = {}
    for source, number in places:
        wanted.setdefault(source, set()).add(number)
    return {(source, n): line for source, numbers in wanted.items() if is_readable_again(source)
            for n, line in log_reader.read_lines(source, numbers).items()}


EXAMPLE_CHARS = 4000   # an example line is kept this long in every report


def clip_line(line: str, limit: int = EXAMPLE_CHARS) -> str:
    """``line`` cut to ``limit`` characters with a visible marker saying how long it was."""
    if len(line) <= limit:
        return line
    return f"{line[:limit]}… [clipped: {len(line):,} characters]"


def with_raw(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (a few events: examples, not the whole log) with a String ``raw`` column and a
    Boolean ``rebuilt`` one: each line read back from its file (``rebuilt`` False), or rebuilt from
    its fields where the file cannot be read again (standard input; ``rebuilt`` True)."""
    if frame.height == 0:
        return frame.with_columns(pl.lit(None, dtype=pl.String).alias("raw"),
                                  pl.lit(None, dtype=pl.Boolean).alias("rebuilt"))
    rebuilt = frame.select(rebuilt_line()).to_series().to_list()
    places = list(zip(frame["source"].cast(pl.String).to_list(), frame["line_number"].to_list(), strict=True))
    text = read_back(places)
    raw = [clip_line(text.get(place, line)) for place, line in zip(places, rebuilt, strict=True)]
    return frame.with_columns(pl.Series("raw", raw, dtype=pl.String),
                              pl.Series("rebuilt", [place not in text for place in places], dtype=pl.Boolean))


def with_rebuilt(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (a few events) with a ``raw`` line rebuilt from its fields and ``rebuilt`` True,
    unless it has a ``raw`` column: that is kept, with its ``rebuilt`` column or, lacking one, as
    the logged text."""
    if "raw" not in frame.columns:
        return frame.with_columns(rebuilt_line().alias("raw"), pl.lit(True).alias("rebuilt"))
    return frame if "rebuilt" in frame.columns else frame.with_columns(pl.lit(False).alias("rebuilt"))


def client_order(frame: pl.DataFrame) -> pl.Expr:
    """A sort key that groups each client's events together: the categorical code where the
    client column is categorical (several times faster to sort than the text), else the text."""
    column = pl.col("client_ip")
    return column.to_physical() if frame.schema["client_ip"] == pl.Categorical else column
