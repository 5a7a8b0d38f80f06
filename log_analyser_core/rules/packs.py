"""The built-in rule packs, found as package data with importlib.resources.

A pack that is missing is an error naming where it was looked for, never a silent empty stage.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from log_analyser_core.errors import RulesError


def package_pack(folder: str, pattern: str, kind: str) -> Path:
    """The folder ``folder`` of this package's data, holding at least one ``pattern`` file."""
    place = resources.files(__package__) / folder
    path = Path(str(place))
    if not isinstance(place, Path) or not any(path.glob(pattern)):
        raise RulesError(f"the built-in {kind} rule pack is missing: no {pattern} files in {path}",
                         hint="reinstall log_analyser")
    return path
