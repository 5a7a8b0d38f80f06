"""The CRS stage: OWASP Core Rule Set request rules over an access log, as Evidence per client.

``load`` reads a CRS folder (``--crs DIR``, or the one ``rules update --crs`` installed) and
compiles what a log can run at a paranoia level; ``evaluate`` runs it on the events, 2^20
events at a time, and turns every rule that fired in a request whose CRS anomaly score reached
the threshold into Evidence (rule id, message, tags with the paranoia level, the matched value
clipped, example lines). Attack types come from CRS's ``attack-*`` tags.
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from log_analyser_core.errors import RulesError
from log_analyser_core.results import AttackType, Evidence, ExampleLine, Severity
from log_analyser_core.rules import hits as rule_hits
from log_analyser_core.rules.crs import install

if TYPE_CHECKING:   # the compiler and engine (and the regex module) are imported when a CRS is loaded
    from log_analyser_core.rules.crs.compile import CompiledRule, RuleSet

log = logging.getLogger(__name__)
CHUNK_EVENTS = 2**20
MATCHED_CHARS = 120          # the matched value shown in evidence is clipped to this
PARANOIA_LEVELS = (1, 2, 3, 4)
SEVERITY = {"CRITICAL": Severity.HIGH, "ERROR": Severity.MEDIUM, "WARNING": Severity.MEDIUM,
            "NOTICE": Severity.LOW}
# CRS tag -> attack type; the first tag of a rule found here decides.
ATTACK_TYPE_BY_TAG = {
    "attack-sqli": AttackType.SQLI, "attack-xss": AttackType.XSS, "attack-lfi": AttackType.PATH_TRAVERSAL,
    "attack-rce": AttackType.RCE, "attack-rfi": AttackType.RCE, "attack-injection-php": AttackType.RCE,
    "attack-injection-java": AttackType.RCE, "attack-injection-generic": AttackType.RCE,
    "attack-ssti": AttackType.RCE, "attack-ssrf": AttackType.SSRF, "attack-reputation-scanner": AttackType.SCANNER,
    "attack-protocol": AttackType.PROTOCOL_VIOLATION, "attack-multipart-header": AttackType.PROTOCOL_VIOLATION,
    "attack-deprecated-header": AttackType.PROTOCOL_VIOLATION,
}
# Site policy rather than attack: a restricted file extension (920440: .log, .conf, .sql, .sh ...)
# or file name (930130: .env, config.xml, error logs ...). On elastic's apache_logs they fire on
# downloads the site offers (sample.log, dhcpd.conf) and browsers' own browserconfig.xml; on the
# webhawk logs mostly on probes (wallet.dat, dump.sql, .git). Low severity: they add their type to a
# client other evidence flags (the secret-file behaviour rule, Sigma's probe rules), never flag alone.
POLICY_RULES = frozenset({920440, 930130})
NO_CRS_NOTE = ("CRS: no Core Rule Set found, so its payload rules did not run (install one with "
               "`log_analyser rules update --crs`, or point --crs at a CRS folder)")


def find(explicit: str | None, auto: bool = True) -> Path | None:
    """The CRS folder to use: ``explicit`` (must exist), else the installed one when ``auto``."""
    if explicit:
        folder = Path(explicit).expanduser()
        if not folder.is_dir():
            raise RulesError(f"--crs {explicit}: not a folder", hint="give a CRS release or its rules/ folder")
        return folder
    return install.installed() if auto else None


def load(folder: Path, paranoia: int = 1, threshold: int | None = None,
         settings: tuple[tuple[str, str], ...] = ()) -> RuleSet:
    """The rules of the CRS at ``folder`` an access log can run at ``paranoia`` (1-4), with CRS
    ``settings`` (tx name, value) as crs-setup.conf sets them."""
    if paranoia not in PARANOIA_LEVELS:
        raise RulesError(f"paranoia level {paranoia} is not one of 1, 2, 3, 4")
    from log_analyser_core.rules.crs import compile as crs_compile
    from log_analyser_core.rules.crs import seclang

    started = time.perf_counter()
    ruleset = crs_compile.build(seclang.read_rules(folder), paranoia, threshold, dict(settings))
    log.info("CRS: %d rules at paranoia level %d loaded in %.2f s", len(ruleset.rules), paranoia,
             time.perf_counter() - started)
    return ruleset


def parse_setting(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (``--crs-set``) -> (name, value); the name is a CRS tx setting."""
    name, sep, value = text.partition("=")
    name = name.strip().lower().removeprefix("tx.")
    if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"--crs-set wants NAME=VALUE (a CRS setting such as crs_validate_utf8_encoding=0), "
                         f"not {text!r}")
    return name, value.strip()


def notes(ruleset: RuleSet) -> list[str]:
    """One line for the summary: what ran, and what an access log cannot run."""
    lacking = sorted(ruleset.unsupported)
    shown = ", ".join(str(i) for i in lacking[:12]) + (", ..." if len(lacking) > 12 else "")
    return [f"CRS: {len(ruleset.rules)} request rules at paranoia level {ruleset.paranoia} (anomaly threshold "
            f"{ruleset.threshold}); {len(lacking)} need what an access log lacks (bodies, cookies, other "
            f"headers) and did not run: {shown}"]


def matches(events: pl.DataFrame, ruleset: RuleSet, chunk_events: int = CHUNK_EVENTS) -> pl.DataFrame:
    """Every (event row, rule) CRS flags: ``_row`` indexes ``events``, ``rule`` the rule id,
    ``matched`` 'VARIABLE:key=value' of the first variable that matched, ``score`` the request's
    anomaly score. Only requests at or above the threshold; sorted by row and rule."""
    from log_analyser_core.rules.crs import engine, variables

    out = []
    for offset in range(0, events.height, chunk_events):
        chunk = variables.request_columns(events.slice(offset, chunk_events))
        reqs = variables.requests(chunk).filter(pl.col("path").is_not_null())
        if reqs.height == 0:
            continue
        hits = engine.request_hits(reqs, ruleset)
        scores = engine.scores(hits, ruleset).filter(pl.col("score") >= ruleset.threshold)
        if scores.height == 0:
            continue
        firing = hits.join(scores, on="rid").group_by("rid", "rule").agg(
            pl.first("score"), _label().first().alias("matched"))
        rows = variables.rows_of(chunk, reqs.filter(pl.col("rid").is_in(scores["rid"].implode())), offset)
        out.append(firing.join(rows, on="rid").select(pl.col("_row").cast(pl.UInt32), "rule", "matched", "score"))
    if not out:
        return pl.DataFrame(schema={"_row": pl.UInt32, "rule": pl.Int64, "matched": pl.String, "score": pl.Int64})
    return pl.concat(out).sort("_row", "rule")


def _label() -> pl.Expr:
    name = pl.when(pl.col("key").is_not_null()).then(pl.col("variable") + ":" + pl.col("key")).otherwise(
        pl.col("variable"))
    value = pl.col("value")
    clipped = pl.when(value.str.len_chars() > MATCHED_CHARS).then(
        value.str.slice(0, MATCHED_CHARS) + "…").otherwise(value)
    return name + "=" + clipped


def evaluate(events: pl.DataFrame, ruleset: RuleSet, examples: int = 3,
             read_back: bool = True) -> dict[str, tuple[Evidence, ...]]:
    """Evidence per client IP: one entry per CRS rule that fired in its requests over the
    threshold, with the request count, first matched value and first ``examples`` lines (read
    back from their files unless ``read_back`` is False, see hits.by_client)."""
    if not ruleset.rules or events.height == 0:
        return {}
    by_id = {r.id: r for r in ruleset.rules}
    return rule_hits.evidence_by_client(events, matches(events, ruleset), examples,
                                        lambda row, shown: _evidence(by_id[row["rule"]], row, shown),
                                        order=lambda e: (-e.severity, e.rule_id), firsts=("matched",),
                                        read_back=read_back)


def _evidence(rule: CompiledRule, row: dict, lines: tuple[ExampleLine, ...]) -> Evidence:
    level = f"paranoia-level/{rule.rule.paranoia_level}"
    tags = tuple(t for t in rule.rule.tags if not t.startswith(("OWASP_CRS", "capec/", "PCI/", "paranoia-level/")))
    severity = Severity.LOW if rule.id in POLICY_RULES else SEVERITY.get(rule.rule.severity, Severity.MEDIUM)
    return Evidence(kind="crs", rule_id=str(rule.id), title=_title(rule.rule.message), severity=severity,
                    attack_type=attack_type_of(tags),
                    count=int(row["count"]), examples=lines, tags=(*tags, level), matched=row["matched"])


def _title(message: str) -> str:
    """CRS messages carry macros (``%{MATCHED_VAR}``) filled in by ModSecurity; ours are static."""
    return re.sub(r"\s*%\{[^}]+\}", "", message).strip() or "CRS rule"


def attack_type_of(tags: tuple[str, ...]) -> AttackType | None:
    return next((ATTACK_TYPE_BY_TAG[t] for t in tags if t in ATTACK_TYPE_BY_TAG), None)
