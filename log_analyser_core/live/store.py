"""The recent requests of every live client, in bounded memory.

Each client keeps at most ``per_client`` of its latest events; a client idle for ``idle_ttl``
seconds (wall clock) is evicted with its state, and when more than ``max_events`` events are held
clients are evicted down to 90% of it, least recently seen first, but a client with a kept
failed request (status 400 or more) counts as seen FAILED_GRACE_SECONDS later than it was, and a
suspect (flagged, or with evidence) ``idle_ttl`` later: a busy site's passing visitors make room
before a slow attacker whose next attempt its rules still need to see. The events keep the
canonical schema, so the batch stages (features, rules, signatures, Sigma) read them unchanged.

Memory: a kept event takes about 100 bytes of columns (categorical text, no raw line). MAX_EVENTS
is what a follower fills in about 75 seconds at 2,000 lines a second, so that its RSS is flat
from then on (bench/bench_follow.py); more history costs memory in proportion (--max-events).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import polars as pl

from file_parser import EVENT_SCHEMA

log = logging.getLogger(__name__)

IDLE_TTL_SECONDS = 3600.0      # a client silent this long is forgotten (and may alert again later)
PER_CLIENT_EVENTS = 5000       # a client's latest events kept (rule windows, features)
MAX_EVENTS = 150_000           # events kept in all; beyond it clients are evicted (benign-looking ones first)
FAILED_STATUS = 400            # a client with a kept request answered this or above ...
FAILED_GRACE_SECONDS = 600.0   # ... is evicted as if seen this much later (rule windows of minutes)


@dataclass(frozen=True)
class Limits:
    """How much the store may hold (see the module docstring); seconds and event counts."""

    idle_ttl: float = IDLE_TTL_SECONDS
    per_client: int = PER_CLIENT_EVENTS
    max_events: int = MAX_EVENTS


@dataclass
class ClientStore:
    """Events of the live clients (EVENT_SCHEMA, in arrival order) and when each last sent one."""

    limits: Limits = Limits()
    events: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=EVENT_SCHEMA))
    last_seen: dict[str, float] = field(default_factory=dict)   # client -> wall-clock seconds
    kept: dict[str, int] = field(default_factory=dict)          # client -> events held
    on_evict: Callable[[set[str]], None] | None = None

    def add(self, events: pl.DataFrame, now: float) -> set[str]:
        """Keep ``events`` (EVENT_SCHEMA); returns the clients they came from."""
        if not events.height:
            return set()
        self.events = pl.concat([self.events, events.select(list(EVENT_SCHEMA))], rechunk=False)
        added = _per_client(events)
        for ip, count in added.items():
            self.last_seen[ip] = now
            self.kept[ip] = self.kept.get(ip, 0) + count
        return set(added)

    def load(self, events: pl.DataFrame, last_seen: dict[str, float]) -> None:
        """Hold ``events`` and ``last_seen`` (from a checkpoint) instead of what is held."""
        self.events, self.last_seen, self.kept = events, dict(last_seen), _per_client(events)

    def of(self, clients: Iterable[str]) -> pl.DataFrame:
        """The kept events of ``clients``, in arrival order."""
        return self.events.filter(_among(clients))

    @property
    def full(self) -> bool:
        """Whether more than ``max_events`` events are held (compact() is then due)."""
        return self.events.height > self.limits.max_events

    def compact(self, now: float, suspects: Iterable[str] = ()) -> set[str]:
        """Apply the limits: evict idle clients, trim each client to its latest events, then, while
        over ``max_events``, evict clients in the order of the module docstring (``suspects`` last).
        Returns the evicted clients."""
        gone = {ip for ip, seen in self.last_seen.items() if now - seen > self.limits.idle_ttl}
        latest = pl.int_range(pl.len()).reverse().over("client_ip") < self.limits.per_client
        kept = self.events.filter(~_among(gone)).filter(latest)
        if kept.height > self.limits.max_events:
            over = self._over_limit(kept, set(suspects))
            gone |= over
            kept = kept.filter(~_among(over))
        self.events = kept.rechunk()
        self.kept = _per_client(self.events)
        for ip in gone:
            self.last_seen.pop(ip, None)
        if gone:
            log.info("evicted %d client(s) (idle or over the memory limit)", len(gone))
            if self.on_evict is not None:
                self.on_evict(gone)
        return gone


    def _over_limit(self, kept: pl.DataFrame, suspects: set[str]) -> set[str]:
        """The clients to evict so that ``kept`` falls to 90% of ``max_events``."""
        per_client = kept.group_by(pl.col("client_ip").cast(pl.String)).agg(
            pl.len().alias("events"), (pl.col("status") >= FAILED_STATUS).any().alias("failed"))
        rows = per_client.iter_rows()
        def standing(row: tuple[str, int, bool]) -> float:   # as if seen this much later: evicted later
            ip, _, failed = row
            bonus = self.limits.idle_ttl if ip in suspects else FAILED_GRACE_SECONDS if failed else 0.0
            return self.last_seen.get(ip, 0.0) + bonus
        order = sorted(rows, key=standing)
        evicted, total = set(), kept.height
        for ip, events, _ in order:
            if total <= 0.9 * self.limits.max_events:
                break
            evicted.add(ip)
            total -= events
        return evicted


def _per_client(events: pl.DataFrame) -> dict[str, int]:
    """Events by client ip (one row per client, not per event, crosses into Python)."""
    return dict(events.group_by(pl.col("client_ip").cast(pl.String)).len().iter_rows())


def _among(clients: Iterable[str]) -> pl.Expr:
    """Whether an event's client is one of ``clients``: compared as categoricals, which is many times
    faster on a large store than casting every row's client to text."""
    return pl.col("client_ip").is_in(pl.Series(list(clients), dtype=pl.Categorical).implode())
