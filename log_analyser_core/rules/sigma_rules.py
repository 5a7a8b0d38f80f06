"""What a Sigma pack compiles to: rules ready to run, and what was wrong with the others. Apart from
sigma_engine so that the compiled-pack cache (sigma_cache) can rebuild them without importing it."""
from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from log_analyser_core.results import AttackType, Severity


@dataclass(frozen=True)
class Problem:
    """Something wrong with one rule. ``kind`` is "error" (the rule does not load), "unsupported"
    (it loads but uses a feature this engine does not evaluate) or "warning" (a validator's advice)."""

    kind: str
    path: str
    rule_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: rule {self.rule_id}: {self.message}"


@dataclass(frozen=True)
class CompiledRule:
    """A webserver Sigma rule ready to run: ``expression`` is true on the events it matches."""

    id: str
    title: str
    severity: Severity
    status: str
    tags: tuple[str, ...]
    attack_type: AttackType | None
    path: str
    expression: pl.Expr = field(repr=False)
    views: frozenset[str] = frozenset()
    fields: frozenset[str] = frozenset()   # Sigma field names it reads (KEYWORDS for the raw line)


@dataclass(frozen=True)
class RuleSet:
    """Every rule read from ``folders``: those that run, and what was wrong with the others."""

    folders: tuple[str, ...]
    rules: tuple[CompiledRule, ...]
    problems: tuple[Problem, ...] = ()
    other_logsource: int = 0     # rules skipped because their logsource is not webserver

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def notes(self) -> list[str]:
        """One line per skipped rule, for the run summary."""
        notes = [f"Sigma rule skipped, unsupported: {p}" for p in self.of_kind("unsupported")]
        if self.other_logsource:
            notes.append(f"{self.other_logsource} Sigma rules skipped: logsource is not webserver")
        return notes
