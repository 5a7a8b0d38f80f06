"""From parsed CRS rules to what an access log can evaluate.

A rule runs when every link reads something a log has (see ``REQUEST_VARIABLES``), its operator
and transformations are known, and its paranoia level is at most the run's. Links on TX settings
(``TX:crs_validate_utf8_encoding "@eq 1"``) are decided here from CRS's defaults; a rule they
switch off is inactive, not unsupported. A rule that reads only what a log lacks (bodies,
cookies, other headers, the response, the peer address) is listed as unsupported with the reason.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

from log_analyser_core.rules.crs import operators, seclang, transforms, variables
from log_analyser_core.rules.crs.seclang import Link, SecRule, Variable

# What an access log holds of a request, as ModSecurity names it.
REQUEST_VARIABLES = frozenset({
    "REQUEST_LINE", "REQUEST_METHOD", "REQUEST_PROTOCOL", "REQUEST_URI", "REQUEST_URI_RAW", "REQUEST_FILENAME",
    "REQUEST_BASENAME", "QUERY_STRING", "ARGS", "ARGS_GET", "ARGS_NAMES", "ARGS_GET_NAMES", "REQUEST_HEADERS",
})
LOGGED_HEADERS = {header.lower(): header for header in variables.HEADERS.values()}
CHAIN_VARIABLES = frozenset({"MATCHED_VAR", "MATCHED_VARS", "TX"})
# Files that hold CRS's own machinery (settings, score sums, exclusions), not detections.
MACHINERY = ("REQUEST-901-", "REQUEST-949-", "REQUEST-999-")
SEVERITY_SCORE = {"CRITICAL": "critical_anomaly_score", "ERROR": "error_anomaly_score",
                  "WARNING": "warning_anomaly_score", "NOTICE": "notice_anomaly_score"}
MACRO = re.compile(r"%\{([A-Za-z_]+)\.([^}]+)\}")


@dataclass(frozen=True)
class Target:
    """A request variable a link reads: ``variable`` in REQUEST_VARIABLES, ``key`` a literal
    name, ``key_regex`` a selector pattern (case-insensitive), or neither for all."""

    variable: str
    key: str | None = None
    key_regex: str | None = None
    count: bool = False


@dataclass(frozen=True)
class CompiledLink:
    link: Link
    targets: tuple[Target, ...]
    excluded: tuple[Target, ...]
    operator: operators.Operator | None   # None when the argument holds a macro resolved per request
    chain_only: bool                       # reads MATCHED_VAR(S) or TX: evaluated per request


@dataclass(frozen=True)
class CompiledRule:
    rule: SecRule
    links: tuple[CompiledLink, ...]
    score: int                 # anomaly points when it fires (0: a control rule, e.g. ctl only)
    removes: tuple[tuple[str, str], ...] = ()   # ctl:ruleRemoveTargetByTag=(tag, VARIABLE) when it fires

    @property
    def id(self) -> int:
        return self.rule.id

    @property
    def vectorised(self) -> bool:
        """True when the whole rule is its first link (no chain): evaluated on columns alone."""
        return len(self.links) == 1 and self.links[0].operator is not None


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[CompiledRule, ...]
    unsupported: dict[int, str]          # rule id -> why an access log cannot run it
    inactive: tuple[int, ...]            # switched off by CRS's settings
    above_paranoia: tuple[int, ...]
    paranoia: int
    threshold: int
    tx: dict[str, str] = field(default_factory=dict)
    folder: str = ""
    python_regex: tuple[int, ...] = ()   # rules whose @rx did not compile in Polars


def expand(text: str, tx: dict[str, str]) -> str | None:
    """``%{tx.name}`` macros replaced from ``tx``; None when one is not known (resolved per request)."""
    missing = False

    def one(m: re.Match[str]) -> str:
        nonlocal missing
        if m.group(1).lower() == "tx" and m.group(2).lower() in tx:
            return tx[m.group(2).lower()]
        missing = True
        return ""
    out = MACRO.sub(one, text)
    return None if missing else out


def build(files: seclang.RuleFiles, paranoia: int = 1, threshold: int | None = None,
          overrides: dict[str, str] | None = None) -> RuleSet:
    """The rules of ``files`` an access log can run at ``paranoia`` (1-4); ``overrides`` set CRS
    settings (tx variables, as crs-setup.conf would: ``crs_validate_utf8_encoding=0``)."""
    tx = dict(files.tx_defaults)
    tx.update({k.lower(): v for k, v in (overrides or {}).items()})
    tx.update(blocking_paranoia_level=str(paranoia), detection_paranoia_level=str(paranoia))
    tx = {k: expand(v, tx) or v for k, v in tx.items()}
    compiled: list[CompiledRule] = []
    unsupported: dict[int, str] = {}
    inactive: list[int] = []
    above: list[int] = []
    python_rx: list[int] = []
    for rule in files.rules:
        if rule.file.startswith(MACHINERY):
            continue
        if rule.paranoia_level > paranoia:
            above.append(rule.id)
            continue
        result = _compile(rule, tx, files.data_dir or Path("."))
        if isinstance(result, str):
            (inactive.append(rule.id) if result == "inactive" else unsupported.__setitem__(rule.id, result))
            continue
        compiled.append(result)
        if any(c.operator is not None and not c.operator.polars_regex for c in result.links):
            python_rx.append(rule.id)
    limit = threshold if threshold is not None else int(tx.get("inbound_anomaly_score_threshold", "5"))
    return RuleSet(tuple(compiled), unsupported, tuple(inactive), tuple(above), paranoia, limit, tx,
                   str(files.data_dir or ""), tuple(python_rx))


def _compile(rule: SecRule, tx: dict[str, str], data_dir: Path) -> CompiledRule | str:
    links = list(rule.links)
    while links and _static(links[0]):      # settings gates: decide now
        if not static_match(links[0], tx):
            return "inactive"
        links = links[1:]
    if not links:
        return "inactive"
    out = []
    for index, link in enumerate(links):
        compiled = _compile_link(link, tx, data_dir, first=index == 0)
        if isinstance(compiled, str):
            return compiled
        out.append(compiled)
    score = _score(rule, tx)
    removes = tuple(_removal(v) for k, v in rule.first.actions
                    if k == "ctl" and v.startswith("ruleRemoveTargetByTag=") and ";" in v)
    if score == 0 and not removes:
        return "inactive"
    return CompiledRule(rule, tuple(out), score, removes)


def _removal(ctl: str) -> tuple[str, str]:
    """``ruleRemoveTargetByTag=TAG;VARIABLE`` -> (TAG, VARIABLE)."""
    tag, _, variable = ctl.split("=", 1)[1].partition(";")
    return tag, variable


def _score(rule: SecRule, tx: dict[str, str]) -> int:
    for link in rule.links:
        for value in link.all("setvar"):
            if value.lower().startswith("tx.inbound_anomaly_score_pl"):
                return int(expand(value.split("=+", 1)[-1], tx) or 0)
    return 0


def _static(link: Link) -> bool:
    """A link on TX settings only (not on captures or values set by the rule)."""
    return all(v.collection == "TX" and v.key is not None and not v.key.isdigit() and not v.key_regex
               for v in link.variables)


def static_match(link: Link, tx: dict[str, str]) -> bool:
    values = []
    for variable in link.variables:
        present = variable.key is not None and variable.key.lower() in tx
        values.append(str(int(present)) if variable.count else (tx.get((variable.key or "").lower())))
    argument = expand(link.argument, tx) or ""
    op = operators.Operator(link.operator.lower(), argument, link.negated)
    return any(op.one(v) for v in values if v is not None)


def _compile_link(link: Link, tx: dict[str, str], data_dir: Path, first: bool) -> CompiledLink | str:
    name = link.operator.lower()
    if name not in operators.SUPPORTED:
        return f"operator @{link.operator}"
    if name in ("detectsqli", "detectxss") and importlib.util.find_spec("libinjection") is None:
        return f"operator @{link.operator} needs libinjection (pip install 'log_analyser[crs]')"
    unknown = [t for t in link.transforms if not transforms.known(t)]
    if unknown:
        return f"transformation t:{unknown[0]}"
    targets, excluded, lacking = _targets(link.variables)
    chain_only = any(v.collection in CHAIN_VARIABLES and not v.exclude for v in link.variables)
    if first and chain_only:
        return "reads " + "|".join(sorted({v.collection for v in link.variables}))
    if not targets and not chain_only:
        return "reads " + "|".join(lacking or ["nothing"])
    argument = expand(link.argument, tx)
    return CompiledLink(link, targets, excluded, _operator(name, argument, link.negated, data_dir), chain_only)


def _operator(name: str, argument: str | None, negated: bool, data_dir: Path) -> operators.Operator | None:
    if argument is None:
        return None
    if name in ("pmfromfile", "pmf"):
        return operators.Operator(name, argument, negated, operators.phrases_from_files(argument, data_dir))
    if name == "pm":
        return operators.Operator(name, argument, negated, tuple(argument.split()))
    if name == "rx":
        return operators.Operator(name, argument, negated)
    return operators.Operator(name, argument, negated)


def _targets(variables: tuple[Variable, ...]) -> tuple[tuple[Target, ...], tuple[Target, ...], list[str]]:
    """(request targets read, targets excluded, names of what a log lacks)."""
    targets: list[Target] = []
    excluded: list[Target] = []
    lacking: list[str] = []
    for v in variables:
        if v.collection in CHAIN_VARIABLES:
            continue
        if v.collection not in REQUEST_VARIABLES:
            lacking.append(v.collection)
            continue
        if v.collection == "REQUEST_HEADERS" and v.key and not v.key_regex and v.key.lower() not in LOGGED_HEADERS:
            lacking.append(f"REQUEST_HEADERS:{v.key}")
            continue
        if v.count and v.collection == "REQUEST_HEADERS" and (v.key or "").lower() == "host":
            lacking.append("&REQUEST_HEADERS:Host")   # an unlogged host is not a missing Host header
            continue
        key = LOGGED_HEADERS.get((v.key or "").lower(), v.key) if v.collection == "REQUEST_HEADERS" else v.key
        target = Target(v.collection, None if v.key_regex else key, v.key_regex, v.count)
        (excluded if v.exclude else targets).append(target)
    return tuple(targets), tuple(excluded), lacking
