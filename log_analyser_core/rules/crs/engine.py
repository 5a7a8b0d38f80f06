"""Evaluating compiled CRS rules on the events table.

Rules run once per distinct request. A rule without a chain is one Polars expression over the
distinct values of the variables it reads (transformations computed once per distinct value and
chain, shared by every rule with the same targets and chain). A chained rule's first link is
evaluated the same way to find candidate requests; the whole rule (captures, MATCHED_VAR(S),
``setvar`` values read by the next link) then runs per candidate request in Python. Requests whose
anomaly score (CRS's points per severity, summed over the rules that fired) reaches the threshold
are the hits.
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace

import polars as pl

from log_analyser_core.rules.crs import operators, transforms, variables
from log_analyser_core.rules.crs.compile import MACRO, CompiledLink, CompiledRule, RuleSet, Target, expand

log = logging.getLogger(__name__)
CHUNK_EVENTS = 2**20
HIT_SCHEMA = {"rid": pl.UInt32, "rule": pl.Int64, "variable": pl.String, "key": pl.String, "value": pl.String}


def request_hits(reqs: pl.DataFrame, ruleset: RuleSet) -> pl.DataFrame:
    """Every (request, rule, matched variable) of ``reqs`` (from ``variables.requests``), before
    the threshold: rid, rule id, variable, key and the variable's value (untransformed)."""
    long = variables.long_table(reqs)
    long = pl.concat([long, _counts(reqs, long, ruleset)])
    vector = [r for r in ruleset.rules if r.vectorised]
    chained = [r for r in ruleset.rules if not r.vectorised]
    frames = [_vector_hits(long, vector)]
    candidates = _vector_hits(long, [r for r in chained if _candidate_link(r) is not None])
    frames.append(_chained_hits(long, chained, candidates, ruleset.tx))
    hits = pl.concat([f for f in frames if f.height], how="vertical") if any(f.height for f in frames) \
        else pl.DataFrame(schema=HIT_SCHEMA)
    return _apply_removals(hits, ruleset)


def scores(hits: pl.DataFrame, ruleset: RuleSet) -> pl.DataFrame:
    """(rid, score): CRS anomaly points per request. As in ModSecurity, a rule's points count once
    per variable it matched (two arguments with a stray byte are two warnings)."""
    points = pl.DataFrame({"rule": [r.id for r in ruleset.rules], "points": [r.score for r in ruleset.rules]},
                          schema={"rule": pl.Int64, "points": pl.Int64})
    fired = hits.select("rid", "rule", "variable", "key").unique().join(points, on="rule")
    return fired.group_by("rid").agg(pl.col("points").sum().alias("score"))


def _candidate_link(rule: CompiledRule) -> int | None:
    """The first link that can run on columns: a request it does not match cannot fire the rule."""
    return next((i for i, link in enumerate(rule.links) if link.operator is not None and link.targets
                 and not link.chain_only), None)


def _counts(reqs: pl.DataFrame, long: pl.DataFrame, ruleset: RuleSet) -> pl.DataFrame:
    """``&VARIABLE:key`` as rows of their own (variable '&VARIABLE'): how many values each
    request has, 0 included."""
    wanted = {t for r in ruleset.rules for link in r.links for t in link.targets if t.count}
    out = []
    for t in sorted(wanted, key=str):
        plain = Target(t.variable, t.key, t.key_regex)
        found = long.filter(_select_one(plain)).group_by("rid").len()
        counted = reqs.select("rid").join(found, on="rid", how="left").select(
            "rid", pl.lit("&" + t.variable).alias("variable"), pl.lit(t.key, pl.String).alias("key"),
            pl.col("len").fill_null(0).cast(pl.String).alias("value"))
        out.append(counted)
    return pl.concat(out) if out else pl.DataFrame(schema=variables.LONG_SCHEMA)


def _select_one(t: Target) -> pl.Expr:
    name = variables.ALIASES.get(t.variable, t.variable)
    match = pl.col("variable") == ("&" + name if t.count else name)
    if t.key is not None:
        match &= pl.col("key").str.to_lowercase() == t.key.lower()
    elif t.key_regex is not None:
        match &= pl.col("key").str.contains("(?i)" + t.key_regex)
    return match


def _selector(link: CompiledLink) -> pl.Expr:
    include = pl.any_horizontal([_select_one(t) for t in link.targets])
    if link.excluded:
        include &= ~pl.any_horizontal([_select_one(t) for t in link.excluded]).fill_null(False)
    return include.fill_null(False)


def _link(rule: CompiledRule) -> CompiledLink:
    return rule.links[_candidate_link(rule) or 0]


def _group_key(rule: CompiledRule) -> tuple:
    link = _link(rule)
    return link.targets, link.excluded, link.link.transforms, rule.rule.multi_match and link is rule.links[0]


def _vector_hits(long: pl.DataFrame, rules: list[CompiledRule]) -> pl.DataFrame:
    """Rows of HIT_SCHEMA for ``rules`` evaluated by one link (the first that runs on columns)
    on the distinct values."""
    groups: dict[tuple, list[CompiledRule]] = defaultdict(list)
    for rule in rules:
        groups[_group_key(rule)].append(rule)
    out = []
    caches: dict[tuple, _Transformed] = {}   # per target set: its values under each chain
    for (targets, excluded, chain, multi), members in groups.items():
        selected = long.filter(_selector(_link(members[0])))
        if selected.height == 0:
            continue
        values = selected.select("value").unique()
        cache = caches.setdefault((targets, excluded), _Transformed(values))
        stages = [chain[:k] for k in range(len(chain) + 1)] if multi else [chain]
        frame = values.lazy()
        for k, stage in enumerate(stages):
            frame = frame.join(cache.of(stage).lazy().rename({"t": f"_t{k}"}), on="value", how="left")
        try:
            matched = _matched(frame, members, len(stages))
        except pl.exceptions.ComputeError:   # a pattern Polars' regex engine refuses: those in Python
            log.info("CRS rules %s: a regex did not compile in Polars; using Python's", [r.id for r in members])
            matched = _matched(frame, members, len(stages), python_regex=True)
        if matched.height:
            out.append(selected.join(matched, on="value").select(*HIT_SCHEMA))
    return pl.concat(out) if out else pl.DataFrame(schema=HIT_SCHEMA)


class _Transformed:
    """Every distinct value under each transformation chain, computed once per chain (from the
    chain one shorter) and shared by every rule group that uses it."""

    def __init__(self, values: pl.DataFrame) -> None:
        self._values = values
        self._done: dict[tuple[str, ...], pl.DataFrame] = {(): values.with_columns(pl.col("value").alias("t"))}

    def of(self, chain: tuple[str, ...]) -> pl.DataFrame:
        if chain not in self._done:
            before = self.of(chain[:-1])
            self._done[chain] = before.with_columns(transforms.column(pl.col("t"), chain[-1:]))
        return self._done[chain]


def _matched(frame: pl.LazyFrame, rules: list[CompiledRule], stages: int, python_regex: bool = False
             ) -> pl.DataFrame:
    """(value, rule) for each distinct value each rule's first link matches."""
    masks = [pl.any_horizontal([_op(r, python_regex).column(pl.col(f"_t{k}")) for k in range(stages)])
             .fill_null(False).alias(str(r.id)) for r in rules]
    return (frame.select("value", *masks).unpivot(index="value", variable_name="rule", value_name="hit")
            .filter(pl.col("hit")).select("value", pl.col("rule").cast(pl.Int64)).collect())


def _op(rule: CompiledRule, python_regex: bool = False) -> operators.Operator:
    op = _link(rule).operator
    assert op is not None, "vectorised rules have a compiled operator"
    if python_regex and op.name == "rx" and not operators.polars_compiles(op.argument):
        return replace(op, polars_regex=False)
    return op


def _chained_hits(long: pl.DataFrame, rules: list[CompiledRule], candidates: pl.DataFrame,
                  tx: dict[str, str]) -> pl.DataFrame:
    """Chained rules run per candidate request in Python: the requests their first link matched
    (every request when the first link cannot run on columns)."""
    if not rules:
        return pl.DataFrame(schema=HIT_SCHEMA)
    by_rule = {rule: candidates.filter(pl.col("rule") == rule)["rid"].unique().to_list() for rule in
               {r.id for r in rules}}
    everyone = [r for r in rules if _candidate_link(r) is None]
    wanted = set().union(*by_rule.values()) if by_rule else set()
    subset = long if everyone else long.filter(pl.col("rid").is_in(list(wanted)))
    per_request: dict[int, list[tuple[str, str | None, str]]] = defaultdict(list)
    for rid, variable, key, value in subset.iter_rows():
        per_request[rid].append((variable, key, value))
    rows = []
    for rule in rules:
        rids = list(per_request) if _candidate_link(rule) is None else by_rule.get(rule.id, [])
        for rid in rids:
            first = run_rule(rule, per_request.get(rid, []), tx)
            if first is not None:
                rows.append((rid, rule.id, *first))
    return pl.DataFrame(rows, schema=HIT_SCHEMA, orient="row")


def run_rule(rule: CompiledRule, values: list[tuple[str, str | None, str]], tx: dict[str, str]
             ) -> tuple[str, str | None, str] | None:
    """The rule on one request's variable values, link after link; the first link's matched
    (variable, key, value) when every link matches, else None."""
    state = dict(tx)
    matched: list[tuple[str, str | None, str, str]] = []   # variable, key, raw value, transformed
    first_match = None
    for link in rule.links:
        inputs = _link_inputs(link, values, matched, state)
        argument = expand_request(link.link.argument, state, values, matched)
        op = link.operator or operators.Operator(link.link.operator.lower(), argument, link.link.negated)
        stages = [link.link.transforms[:k] for k in range(len(link.link.transforms) + 1)] \
            if rule.rule.multi_match and link is rule.links[0] else [link.link.transforms]
        found = []
        for variable, key, raw in inputs:
            for chain in stages:
                text = transforms.one(raw, chain)
                if op.one(text):
                    found.append((variable, key, raw, text))
                    _capture(link, op, text, state)
                    break
        if not found:
            return None
        _setvars(link, state)
        matched = found
        first_match = first_match or found[0][:3]
    return first_match


def expand_request(text: str, state: dict[str, str], values: list[tuple[str, str | None, str]],
                   matched: list[tuple[str, str | None, str, str]]) -> str:
    """Macros against one request: %{tx.x}, %{MATCHED_VAR}, %{ARGS.name}, %{REQUEST_HEADERS.name},
    %{REQUEST_LINE} ...; an unknown one is empty, as in ModSecurity."""
    def one(m: re.Match[str]) -> str:
        collection, key = m.group(1).upper(), m.group(2)
        if collection == "TX":
            return state.get(key.lower(), "")
        if collection == "MATCHED_VAR" or (collection == "MATCHED_VARS" and matched):
            return matched[-1][3] if matched else ""
        return next((v for var, k, v in values if var == collection and (k or "").lower() == key.lower()), "")
    def bare(m: re.Match[str]) -> str:
        name = m.group(1).upper()
        if name == "MATCHED_VAR":
            return matched[-1][3] if matched else ""
        return next((v for var, _, v in values if var == name), "")
    text = re.sub(r"%\{([A-Za-z_]+)\}", bare, text)
    return MACRO.sub(one, text)


def _link_inputs(link: CompiledLink, values: Iterable[tuple[str, str | None, str]],
                 matched: list[tuple[str, str | None, str, str]], state: dict[str, str]
                 ) -> list[tuple[str, str | None, str]]:
    inputs: list[tuple[str, str | None, str]] = []
    for v in link.link.variables:
        if v.exclude:
            continue
        if v.collection == "MATCHED_VAR" and matched:
            inputs.append(("MATCHED_VAR", None, matched[-1][3]))
        elif v.collection == "MATCHED_VARS":
            inputs += [("MATCHED_VARS", None, m[3]) for m in matched]
        elif v.collection == "TX":
            inputs += _tx_inputs(v.key or "", v.key_regex, state, v.count)
    for target in link.targets:
        chosen = [x for x in values if _selects(target, x) and not any(_selects(e, x) for e in link.excluded)]
        if target.count:
            inputs.append((f"&{target.variable}", target.key, str(len(chosen))))
        else:
            inputs += chosen
    return inputs


def _tx_inputs(key: str, key_regex: str | None, state: dict[str, str], count: bool
               ) -> list[tuple[str, str | None, str]]:
    names = [k for k in state if re.search(key_regex, k, re.I)] if key_regex else \
        [key.lower()] if key.lower() in state else []
    if count:
        return [("&TX", key, str(len(names)))]
    return [("TX", k, state[k]) for k in names]


def _selects(target: Target, row: tuple[str, str | None, str]) -> bool:
    variable, key, _ = row
    if variable != variables.ALIASES.get(target.variable, target.variable):
        return False
    if target.key is not None:
        return key is not None and key.lower() == target.key.lower()
    if target.key_regex is not None:
        return key is not None and re.search(target.key_regex, key, re.I) is not None
    return True


def _capture(link: CompiledLink, op: operators.Operator, text: str, state: dict[str, str]) -> None:
    if op.name != "rx" or not any(k == "capture" for k, _ in link.link.actions):
        return
    found = operators.python_regex(op.argument).search(text)
    if found is None:
        return
    for index in range(10):
        state.pop(str(index), None)
    state["0"] = found.group(0)
    for index, group in enumerate(found.groups()[:9], start=1):
        if group is not None:
            state[str(index)] = group


def _setvars(link: CompiledLink, state: dict[str, str]) -> None:
    """Values a link sets for the next one to read (scores are summed elsewhere)."""
    for value in link.link.all("setvar"):
        name, _, assigned = value.partition("=")
        if not name.lower().startswith("tx.") or assigned.startswith(("+", "-")):
            continue
        expanded_name = expand(name[3:], state)
        expanded = expand(assigned, state)
        if expanded_name is not None and expanded is not None:
            state[expanded_name.lower()] = expanded


def _apply_removals(hits: pl.DataFrame, ruleset: RuleSet) -> pl.DataFrame:
    """``ctl:ruleRemoveTargetByTag=TAG;VARIABLE``: where the control rule fired, rules tagged TAG
    no longer read VARIABLE (CRS uses it to keep XSS rules off static file names)."""
    by_id = {r.id: r for r in ruleset.rules}
    for rule in ruleset.rules:
        for tag, variable in rule.removes:
            rids = hits.filter(pl.col("rule") == rule.id)["rid"].unique()
            tagged = [r.id for r in ruleset.rules if tag in r.rule.tags]
            drop = pl.col("rid").is_in(rids.implode()) & pl.col("rule").is_in(tagged) & (pl.col("variable") == variable)
            hits = hits.filter(~drop)
    control = [r.id for r in ruleset.rules if by_id[r.id].score == 0]
    return hits.filter(~pl.col("rule").is_in(control))
