"""Sigma rules as a detection stage over the parsed events table.

Rule folders are read with pySigma (rule model, validation, condition parsing); every rule whose
logsource category is ``webserver`` is compiled by sigma_compile into one Polars expression, and
``evaluate`` turns the rows each rule matches into Evidence per client IP. A rule that does not
load is an error (RulesError, naming file and rule id); a rule that uses a feature this engine
does not evaluate is reported by name and skipped, never silently.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from log_analyser_core.errors import RulesError
from log_analyser_core.parsing import sources as log_input
from log_analyser_core.parsing.events import EVENT_SCHEMA
from log_analyser_core.results import AttackType, Evidence, ExampleLine, Severity
from log_analyser_core.rules import hits as rule_hits
from log_analyser_core.rules import (
    sigma_cache,
    sigma_views,  # the taxonomy and views: no pySigma
)
from log_analyser_core.rules.packs import package_pack
from log_analyser_core.rules.sigma_rules import CompiledRule, Problem, RuleSet  # noqa: F401 - part of this API

if TYPE_CHECKING:
    from sigma.rule import SigmaRule

# What rules can read: the event columns, and a line rebuilt from them (see searchable()).
SEARCHABLE = (*EVENT_SCHEMA, "raw")

log = logging.getLogger(__name__)

CHUNK_EVENTS = 2**20   # events matched at once (see matches)
BUILTIN_DIR = "sigma"   # our rule pack, beside this module in a checkout
LEVELS = {"informational": Severity.INFO, "low": Severity.LOW, "medium": Severity.MEDIUM,
          "high": Severity.HIGH, "critical": Severity.CRITICAL}
# Attack type of a rule: the first title pattern that matches, else the first matching tag.
ATTACK_TYPE_BY_TITLE: tuple[tuple[str, AttackType], ...] = (
    (r"sql injection|\bsqli\b", AttackType.SQLI),
    (r"cross.site scripting|\bxss\b|crlf|response splitting", AttackType.XSS),
    (r"remote file inclusion|\brfi\b|log4shell|jndi|spring4shell|ognl|shellshock|web ?shell|command injection"
     r"|code injection|template injection|argument injection|\brce\b|remote code", AttackType.RCE),
    (r"path traversal|directory traversal|local file inclusion|\blfi\b|encoding evasion|file read",
     AttackType.PATH_TRAVERSAL),
    (r"\bssrf\b|server.side request forgery", AttackType.SSRF),
    (r"user.agent|scanner|recon tool|shortname|suspicious http method", AttackType.SCANNER),
    (r"sensitive file|source code enumeration", AttackType.BAD_BOT),
    (r"probing|enumeration|content discovery", AttackType.DIR_BRUTEFORCE),
)
ATTACK_TYPE_BY_TAG: tuple[tuple[str, AttackType], ...] = (
    ("attack.t1595.003", AttackType.DIR_BRUTEFORCE),   # wordlist scanning
    ("attack.t1595", AttackType.SCANNER),              # active scanning
    ("attack.t1110", AttackType.BRUTE_FORCE),
    ("attack.t1552", AttackType.BAD_BOT),               # unsecured credentials (secret-file probes)
    ("attack.t1498", AttackType.DOS),
    ("attack.t1499", AttackType.DOS),
    ("attack.t1505.003", AttackType.RCE),               # web shells
    ("attack.t1059", AttackType.RCE),
    ("attack.t1190", AttackType.RCE),                   # exploit of a public-facing application
    ("cve.", AttackType.RCE),
)
# pySigma validators left out: style the SigmaHQ repository enforces for itself, and the ATT&CK and
# D3FEND tag checks, which download MITRE's data at run time (this tool never calls the internet).
_LEFT_OUT = {"filename_length", "duplicate_filename", "tlpv1_tag", "tlpv2_tag", "attacktag", "d3_fendtag"}


def builtin_dir() -> Path:
    """The built-in Sigma pack: package data of ``log_analyser_core.rules`` (the repository's
    ``sigma/``), in a checkout and in every kind of install alike."""
    return package_pack("sigma_pack", "*.yml", "Sigma")


def rule_files(folders: Iterable[str | Path]) -> list[Path]:
    """Every .yml/.yaml file under the folders (a file is taken as it is), sorted per folder."""
    files: list[Path] = []
    for folder in map(Path, folders):
        if folder.is_file():
            files.append(folder)
        elif folder.is_dir():
            files += sorted(p for p in folder.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
        else:
            raise RulesError("no such rules folder", path=str(folder))
    return files


def check(folders: Sequence[str | Path], columns: Iterable[str] = SEARCHABLE, advice: bool = True) -> RuleSet:
    """Load, validate and compile every rule under ``folders``, collecting every problem; ``advice``
    runs pySigma's validators too (their warnings are style advice, for ``rules check``)."""
    rules: list[SigmaRule] = []
    problems: list[Problem] = []
    other = 0
    for path in rule_files(folders):
        parsed, errors = _read(path)
        problems += errors
        rules += parsed
    problems += _duplicates(rules) + (_validate(rules) if advice else [])
    compiled = []
    for rule in rules:
        if rule.errors:
            continue
        if not _is_webserver(rule):
            other += 1
            continue
        result = _compile(rule, frozenset(columns))
        if isinstance(result, Problem):
            problems.append(result)
        else:
            compiled.append(result)
    failed = {p.rule_id for p in problems if p.kind == "error"}
    compiled = [r for r in compiled if r.id not in failed]
    return RuleSet(tuple(map(str, folders)), tuple(compiled), tuple(problems), other)


def load(folders: Sequence[str | Path], columns: Iterable[str] = SEARCHABLE, *, cache: bool = True) -> RuleSet:
    """``check`` that raises RulesError when any rule does not load; unsupported rules are logged.
    The validators' advice is left to ``rules check``: it does not change what a rule matches, and
    running them costs about as much as compiling the built-in pack.

    With ``cache`` a pack that loaded before, with the same files' content, columns and versions, is
    read from the user cache dir (sigma_cache) instead: no YAML, no pySigma, no compiling."""
    key = sigma_cache.key(rule_files(folders), sorted(columns)) if cache else None
    ruleset = sigma_cache.read(key, folders) if key else None
    if ruleset is None:
        ruleset = check(folders, columns, advice=False)
        if key and not ruleset.of_kind("error"):
            sigma_cache.write(key, ruleset)
    errors = ruleset.of_kind("error")
    if errors:
        more = f"; {len(errors) - 1} more errors" if len(errors) > 1 else ""
        raise RulesError(f"{errors[0]}{more}", hint="list them all with: log_analyser rules check DIR")
    for problem in ruleset.of_kind("unsupported"):
        log.warning("Sigma rule skipped, unsupported: %s", problem)
    return ruleset


def _read(path: Path) -> tuple[list[SigmaRule], list[Problem]]:
    """The rules of one file, and its load errors (YAML, schema, condition, modifiers)."""
    import yaml
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule
    from sigma.exceptions import SigmaError, SigmaRuleLocation
    from sigma.rule import SigmaRule

    try:
        text = path.read_text(encoding="utf-8")
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # what SigmaCollection.from_yaml does, in C
        collection = SigmaCollection.from_dicts(list(yaml.load_all(text, Loader=loader)), collect_errors=True,
                                                source=SigmaRuleLocation(path))
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Problem("error", str(path), "-", f"cannot read: {exc}")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        return [], [Problem("error", str(path), "-", f"invalid YAML{where}: {getattr(exc, 'problem', exc)}")]
    except SigmaError as exc:
        return [], [Problem("error", str(path), "-", _message(exc))]
    rules, problems = [], []
    seen: set[int] = set()
    for rule in collection:
        if isinstance(rule, SigmaCorrelationRule):
            problems.append(Problem("unsupported", str(path), _rule_id(rule, path), "correlation rules"))
            continue
        if not isinstance(rule, SigmaRule):
            problems.append(Problem("unsupported", str(path), _rule_id(rule, path), "Sigma filters"))
            continue
        rule.source = rule.source or SigmaRuleLocation(path)
        problems += [Problem("error", str(path), _rule_id(rule, path), _message(e)) for e in rule.errors]
        seen.update(map(id, rule.errors))
        rules.append(rule)
    problems += [Problem("error", str(path), "-", _message(e)) for e in collection.errors if id(e) not in seen]
    if not collection.rules and not problems:
        problems.append(Problem("error", str(path), "-", "the file holds no Sigma rule"))
    return rules, problems


def _message(error: Exception) -> str:
    """A pySigma error's first line without the location it appends (we print the file ourselves)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    source = getattr(error, "source", None)
    path = getattr(source, "path", None)
    return text.removesuffix(f" in {path}") if path else text


def _rule_id(rule, path: Path) -> str:
    return str(rule.id) if getattr(rule, "id", None) else f"'{getattr(rule, 'title', None) or path.stem}'"


def _duplicates(rules: list[SigmaRule]) -> list[Problem]:
    first: dict[str, str] = {}
    problems = []
    for rule in rules:
        if rule.id is None:
            continue
        where = str(rule.source.path) if rule.source else "?"
        if str(rule.id) in first:
            problems.append(Problem("error", where, str(rule.id), f"duplicate rule id (also in {first[str(rule.id)]})"))
        first.setdefault(str(rule.id), where)
    return problems


def _validate(rules: list[SigmaRule]) -> list[Problem]:
    """pySigma's validators (minus _LEFT_OUT): advice, reported as warnings."""
    from sigma.validation import SigmaValidator
    from sigma.validators.core import validators as core_validators

    chosen = [cls for name, cls in core_validators.items() if name not in _LEFT_OUT]
    problems = []
    for issue in SigmaValidator(chosen).validate_rules(iter(r for r in rules if not r.errors)):
        extra = " ".join(f"{k}={v}" for k, v in vars(issue).items() if k != "rules" and v)
        for rule in issue.rules:
            where = str(rule.source.path) if rule.source else "?"
            message = f"{issue.description}{' (' + extra + ')' if extra else ''}"
            problems.append(Problem("warning", where, _rule_id(rule, Path(where)), message))
    return problems


def _is_webserver(rule: SigmaRule) -> bool:
    return (rule.logsource.category or "").lower() == "webserver"


def _compile(rule: SigmaRule, columns: frozenset[str]) -> CompiledRule | Problem:
    from sigma.exceptions import SigmaError

    from log_analyser_core.rules import sigma_compile

    path = str(rule.source.path) if rule.source else "?"
    compiler = sigma_compile.Compiler(columns, set())
    try:
        parts = [compiler.compile(c.parsed) for c in rule.detection.parsed_condition]
    except sigma_compile.Unsupported as exc:
        return Problem("unsupported", path, _rule_id(rule, Path(path)), str(exc))
    except SigmaError as exc:
        return Problem("error", path, _rule_id(rule, Path(path)), _message(exc))
    expression = parts[0] if len(parts) == 1 else pl.any_horizontal(parts)
    tags = tuple(str(t) for t in rule.tags)
    return CompiledRule(
        id=str(rule.id) if rule.id else Path(path).stem, title=rule.title, severity=severity_of(rule),
        status=rule.status.name.lower() if rule.status else "unknown", tags=tags,
        attack_type=attack_type_of(rule.title, tags), path=path, expression=expression.fill_null(False),
        views=frozenset(compiler.views), fields=frozenset(compiler.fields))


def severity_of(rule: SigmaRule) -> Severity:
    """The rule's level as a Severity; a rule without a level counts as low."""
    return LEVELS.get(rule.level.name.lower(), Severity.LOW) if rule.level else Severity.LOW


def attack_type_of(title: str, tags: Sequence[str]) -> AttackType | None:
    """The attack type a rule detects, from its title, else its tags (ATT&CK, CVE); None if unknown."""
    for pattern, kind in ATTACK_TYPE_BY_TITLE:
        if re.search(pattern, title, re.IGNORECASE):
            return kind
    for prefix, kind in ATTACK_TYPE_BY_TAG:
        if any(tag.lower().startswith(prefix) for tag in tags):
            return kind
    return None


def unrecorded_fields(events: pl.DataFrame, ruleset: RuleSet) -> list[str]:
    """Notes on Sigma fields that rules read but that are empty on every line (e.g. cs-host in a
    combined log, which does not record it): conditions on them cannot match."""
    used: dict[str, int] = {}
    for rule in ruleset.rules:
        for name in rule.fields - {sigma_views.KEYWORDS}:   # every event has a line to search
            used[name] = used.get(name, 0) + 1
    if not used or events.height == 0:
        return []
    columns = {name: sigma_views.source_columns(sigma_views.FIELDS[name].column) for name in used}
    empty = events.select([pl.col(c).is_null().all() for c in {c for cs in columns.values() for c in cs}]).row(
        0, named=True)
    return [f"{count} Sigma rules read {name}, which is empty on every line of this log"
            for name, count in sorted(used.items()) if all(empty[c] for c in columns[name])]


def searchable(events: pl.DataFrame, ruleset: RuleSet) -> pl.DataFrame:
    """The events as the rules read them. Rules on request fields run on the distinct requests,
    whose text columns are cast to String there (the table keeps them categorical); keyword rules
    read every line, so when one is loaded the text columns are cast here and a ``raw`` line is
    rebuilt from the fields (and marked ``rebuilt``): pass a chunk of a big log, not all of it."""
    if "raw" not in events.columns and _keyword_rules(ruleset.rules):
        events = events.with_columns(pl.col(pl.Categorical).cast(pl.String))
        events = log_input.with_rebuilt(events)
    return events


def _keyword_rules(rules: Iterable[CompiledRule]) -> list[CompiledRule]:
    return [r for r in rules if any(v.startswith(sigma_views.KEYWORDS) for v in r.views)]


def matches(events: pl.DataFrame, ruleset: RuleSet, chunk_events: int = CHUNK_EVENTS) -> pl.DataFrame:
    """Every (row, rule) match: ``row`` indexes ``events``, ``rule`` is the rule id; sorted.

    Rules that read only request fields run once per distinct request (method, URI, status,
    headers...), which web logs repeat many times over; keyword rules read the whole line, so
    they run on every row. Both run on ``chunk_events`` events at a time: finding the distinct
    requests of a big log at once (or its text, for keyword rules) would take several times the
    memory of the events table. A request repeated in several chunks is matched in each, which
    costs little, as only logs that repeat their requests have many such."""
    per_line = _keyword_rules(ruleset.rules)
    per_request = [r for r in ruleset.rules if r not in per_line]
    long = []
    for offset in range(0, events.height, chunk_events):
        chunk = searchable(events.slice(offset, chunk_events), ruleset)
        frames = [_match(chunk, per_line, distinct=False, offset=offset),
                  _match(chunk, per_request, distinct=True, offset=offset)]
        long += [f.unpivot(index="_row", variable_name="rule").filter(pl.col("value")).drop("value")
                 for f in frames if f.width > 1]
    if not long:
        return pl.DataFrame(schema={"_row": pl.UInt32, "rule": pl.String})
    return pl.concat(long).sort("_row", "rule")


def _match(events: pl.DataFrame, rules: list[CompiledRule], distinct: bool, offset: int = 0) -> pl.DataFrame:
    """Rows (``_row``, counted from ``offset``) on which at least one of ``rules`` matches, one
    boolean column per rule."""
    if not rules:
        return pl.DataFrame()
    views: set[str] = set().union(*(r.views for r in rules))
    frame = events.lazy().with_row_index("_row", offset=offset)
    if distinct:
        keys = sorted({c for v in views for c in sigma_views.source_columns(v.split(":")[0])})
        frame = frame.group_by(keys).agg("_row") if keys else frame.select("_row")
        frame = frame.with_columns(pl.col(pl.Categorical).cast(pl.String))   # the distinct requests only
        return _select(frame, rules, views, plain=False).explode("_row").collect()
    # Per line: lines without '%' or '+' (most of them) skip URL-decoding, which changes nothing there.
    encoded = pl.col("raw").str.contains_any(sigma_views.ENCODING_MARKS)
    parts = [_select(frame.filter(encoded), rules, views, plain=False),
             _select(frame.filter(~encoded), rules, views, plain=True)]
    return pl.concat(parts).sort("_row").collect()


def _select(frame: pl.LazyFrame, rules: list[CompiledRule], views: set[str], plain: bool) -> pl.LazyFrame:
    for stage in sigma_views.view_columns(views, plain=plain):
        frame = frame.with_columns(stage)
    frame = frame.select("_row", *[r.expression.alias(r.id) for r in rules])
    return frame.filter(pl.any_horizontal([r.id for r in rules]))


def evaluate(events: pl.DataFrame, ruleset: RuleSet, examples: int = 3,
             read_back: bool = True) -> dict[str, tuple[Evidence, ...]]:
    """Evidence per client IP: one entry per rule that matched at least one of its requests, with the
    match count and the first ``examples`` matching lines (read back from their files unless
    ``read_back`` is False, see hits.by_client); severest first, then by rule title."""
    if not ruleset.rules or events.height == 0:
        return {}
    by_id = {r.id: r for r in ruleset.rules}
    return rule_hits.evidence_by_client(events, matches(events, ruleset), examples,
                                        lambda row, shown: _evidence(by_id[row["rule"]], row, shown),
                                        order=lambda e: (-e.severity, e.title), read_back=read_back)


def _evidence(rule: CompiledRule, row: dict, lines: tuple[ExampleLine, ...]) -> Evidence:
    return Evidence(kind="sigma", rule_id=rule.id, title=rule.title, severity=rule.severity,
                    attack_type=rule.attack_type, count=int(row["count"]), examples=lines, tags=rule.tags)
