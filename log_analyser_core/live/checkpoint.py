"""Live mode's checkpoint: file places, alerted clients and kept events, so a restart resumes.

Two files side by side, each replaced atomically: ``<key>.json`` (places by device and inode,
each client's alerted severity and last-seen time) and ``<key>.parquet`` (the kept events). By
default they live in the user data directory (platformdirs), under a key derived from the
followed patterns, so two followers of different logs keep apart.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import polars as pl

from file_parser import EVENT_SCHEMA
from log_analyser_core.errors import ConfigError, InputError
from log_analyser_core.live.outputs import atomic_write
from log_analyser_core.live.tail import Place
from log_analyser_core.results import Severity

log = logging.getLogger(__name__)

VERSION = 1


def default_path(patterns: Sequence[str]) -> Path:
    """``<user data dir>/log_analyser/follow/<hash of the patterns>.json``."""
    from platformdirs import user_data_path

    key = "\n".join(sorted(os.path.abspath(p) for p in patterns))
    return user_data_path("log_analyser") / "follow" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


@dataclass
class Checkpoint:
    places: list[Place] = field(default_factory=list)
    alerted: dict[str, Severity] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)   # wall-clock seconds
    events: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=EVENT_SCHEMA))


def save(path: Path, state: Checkpoint, events: bool = True) -> None:
    """Write the checkpoint; the kept events too unless ``events`` is False (they are the costly part:
    up to --max-events rows, so the loop saves them less often than the places and alerts)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if events or not path.with_suffix(".parquet").exists():
            buffer = io.BytesIO()
            state.events.write_parquet(buffer)
            atomic_write(path.with_suffix(".parquet"), buffer.getvalue())
        document = {"version": VERSION, "places": [p.to_json() for p in state.places],
                    "alerted": {ip: s.label for ip, s in state.alerted.items()}, "last_seen": state.last_seen}
        atomic_write(path, orjson.dumps(document))
    except OSError as exc:
        raise ConfigError(f"cannot write the live-mode checkpoint: {exc.strerror}", path=str(path),
                          hint="choose another place with --checkpoint FILE") from None


def load(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``, or None when there is none; InputError when it cannot be read."""
    if not path.exists():
        return None
    try:
        document = orjson.loads(path.read_bytes())
        if document.get("version") != VERSION:
            raise ValueError(f"version {document.get('version')!r}")
        events = pl.read_parquet(path.with_suffix(".parquet")) if path.with_suffix(".parquet").exists() else None
        return Checkpoint(places=[Place.from_json(p) for p in document["places"]],
                          alerted={ip: Severity.parse(s) for ip, s in document["alerted"].items()},
                          last_seen={ip: float(t) for ip, t in document["last_seen"].items()},
                          events=(events.cast(EVENT_SCHEMA) if events is not None  # type: ignore[arg-type]
                                  else pl.DataFrame(schema=EVENT_SCHEMA)))
    except (OSError, ValueError, KeyError, TypeError, pl.exceptions.PolarsError) as exc:
        raise InputError(f"cannot read the live-mode checkpoint: {exc}", path=str(path),
                         hint="delete it to start afresh") from None
