"""Payload signature, Sigma and OWASP CRS evidence, gathered batch by batch.

The three stages match single requests (CRS scores each request on its own), so they run on each
batch's new requests only, and a client's evidence is the sum over batches: counts add up, and the
first example lines (the earliest requests, for a log read in order) and the first matched value
stay. The result is what one run over all of the client's requests gives, in the same order
(signatures in their table's order, Sigma severest first, then CRS severest first), without
reading any request twice. Example lines are rebuilt from the parsed fields, as the behaviour
rules' and signatures' are, never read back from the file: a followed file may have been rotated
since (its line numbers then name other lines), and finding a line of a growing file again cost
a pass over the file for each batch with a Sigma or CRS match.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import polars as pl

from log_analyser_core.results import Evidence
from log_analyser_core.rules import sigma_engine, signatures
from log_analyser_core.rules.crs import stage as crs_stage

_SIGNATURE_ORDER = {s.id: i for i, s in enumerate(signatures.SIGNATURES)}


@dataclass
class PayloadEvidence:
    sigma: sigma_engine.RuleSet
    crs: crs_stage.RuleSet | None = None     # None: no CRS (none installed, --no-crs)
    found: dict[str, dict[tuple[str, str], Evidence]] = field(default_factory=dict)   # ip -> (kind, rule) -> item

    def add(self, events: pl.DataFrame) -> set[str]:
        """Match ``events`` (new requests, allowlisted ones already left out) and add what matched;
        returns the clients that matched something."""
        if not events.height:
            return set()
        found: list[Mapping[str, Iterable[Evidence]]] = [
            signatures.detect(events), sigma_engine.evaluate(events, self.sigma, read_back=False),
            crs_stage.evaluate(events, self.crs, read_back=False) if self.crs else {}]
        for stage in found:
            for ip, items in stage.items():
                self._merge(ip, items)
        return {ip for stage in found for ip in stage}

    def _merge(self, ip: str, items: Iterable[Evidence]) -> None:
        held = self.found.setdefault(ip, {})
        for item in items:
            key = (item.kind, item.rule_id)
            before = held.get(key)
            held[key] = item if before is None else replace(
                before, count=before.count + item.count,
                examples=(before.examples + item.examples)[:signatures.EXAMPLES])

    def of(self, ip: str) -> list[Evidence]:
        """The client's evidence, signatures first (table order), then Sigma (severest first, then
        title), then CRS (severest first, then rule id), as a batch run lists it."""
        items = self.found.get(ip, {}).values()
        signed = sorted((e for e in items if e.kind == "signature"), key=lambda e: _SIGNATURE_ORDER[e.rule_id])
        sigma = sorted((e for e in items if e.kind == "sigma"), key=lambda e: (-e.severity, e.title))
        crs = sorted((e for e in items if e.kind == "crs"), key=lambda e: (-e.severity, e.rule_id))
        return signed + sigma + crs

    def forget(self, clients: Iterable[str]) -> None:
        for ip in clients:
            self.found.pop(ip, None)
